package node

import (
	"context"
	"errors"
	"fmt"
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
	dir := filepath.Join(stateDir, "netns")
	pods, err := netns.List(dir)
	if err != nil {
		return fmt.Errorf("clean up the pod network: %w", err)
	}
	if len(pods) > 0 {
		return fmt.Errorf("clean up the pod network: %d network namespace(s) of pods are still pinned under %s: remove the pods first (skiff delete, or crictl rmp -a)", len(pods), dir)
	}
	// Spares a node that did not stop cleanly left: loopback-only ones
	// are deleted, pre-networked ones torn down through CNI first (as
	// the next start of the node would).
	if err := inNetNS(func() error { return removeSpares(dir, filepath.Join(stateDir, "cni")) }); err != nil {
		return fmt.Errorf("clean up the pod network: %w", err)
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

// removeSpares deletes the spare namespaces of a node's pools under dir.
func removeSpares(dir, cniState string) error {
	spares, err := netns.List(filepath.Join(dir, ".spare"))
	if err != nil {
		return err
	}
	for _, path := range spares {
		if err := netns.Delete(path); err != nil {
			return err
		}
	}
	prenet, err := netns.List(filepath.Join(dir, ".prenet"))
	if err != nil || len(prenet) == 0 {
		return err
	}
	c, err := netns.NewCNI(netns.CNIConfig{StateDir: cniState})
	if err != nil {
		return err
	}
	pool, err := netns.NewCNIPool(dir, c, 0, nil) // tears down what it finds
	if err != nil {
		return err
	}
	if err := pool.Close(); err != nil {
		return err
	}
	if left, _ := netns.List(filepath.Join(dir, ".prenet")); len(left) > 0 {
		return fmt.Errorf("%d pre-networked spare namespace(s) under %s could not be torn down", len(left), filepath.Join(dir, ".prenet"))
	}
	return nil
}
