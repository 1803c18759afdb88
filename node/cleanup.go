package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"

	"skiff.dev/skiff/netns"
	"skiff.dev/skiff/node/proxy"
)

// CleanupNetwork removes what a node's pod network put on the machine,
// once no pod of the node has a network namespace left under stateDir:
// the service proxy's SKIFF-* chains and their jumps, skiff's routes and
// routing rule, the bridge skiff0, and the CNI state under stateDir/cni
// (IP reservations, cached results). It is kube-proxy --cleanup for a
// skiff node; a node that runs again makes them anew. It leaves the
// sysctls CNI and the proxy set (ip_forward, bridge-nf-call-iptables): the
// machine's earlier values are not known.
func CleanupNetwork(ctx context.Context, stateDir string) error {
	return cleanupNetwork(ctx, stateDir, nil)
}

// cleanupNetwork is CleanupNetwork in the network namespace inNetNS runs
// functions in (nil: the caller's).
func cleanupNetwork(ctx context.Context, stateDir string, inNetNS func(func() error) error) error {
	if inNetNS == nil {
		inNetNS = func(fn func() error) error { return fn() }
	}
	pins := 0
	err := filepath.WalkDir(filepath.Join(stateDir, "netns"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			if ok, _ := netns.IsPinned(path); ok {
				pins++
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("clean up the pod network: %w", err)
	}
	if pins > 0 {
		return fmt.Errorf("clean up the pod network: %d network namespace(s) of pods are still pinned under %s: remove the pods first (skiff delete, or crictl rmp -a)", pins, filepath.Join(stateDir, "netns"))
	}
	px, err := proxy.New(proxy.Config{InNetNS: inNetNS})
	if err != nil {
		return err
	}
	routes, err := proxy.NewRoutes(proxy.RoutesConfig{InNetNS: inNetNS})
	if err != nil {
		return err
	}
	var errs []error
	errs = append(errs, px.Cleanup(ctx), routes.Cleanup(ctx))
	errs = append(errs, inNetNS(func() error {
		br, err := netlink.LinkByName(netns.DefaultCNIBridge)
		if err != nil {
			return nil // none
		}
		if err := netlink.LinkDel(br); err != nil {
			return fmt.Errorf("delete bridge %s: %w", netns.DefaultCNIBridge, err)
		}
		return nil
	}))
	if err := os.RemoveAll(filepath.Join(stateDir, "cni")); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean up the pod network: %w", err)
	}
	return nil
}
