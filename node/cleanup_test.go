package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"skiff.dev/skiff/netns"
	"skiff.dev/skiff/netns/netnstest"
	"skiff.dev/skiff/node/proxy"
)

// TestCleanupNetwork: in a host namespace of the test's own, a node's
// network (service chains, routes, the bridge, CNI state) is removed by
// CleanupNetwork, which first refuses while a pod's namespace is pinned.
func TestCleanupNetwork(t *testing.T) {
	netnstest.NeedCNI(t)
	host := netnstest.HostNamespace(t)
	before := netnstest.Snapshot(t, host)
	inHost := func(fn func() error) error { return netns.Do(host, fn) }
	ctx := context.Background()

	// What a running node leaves: a service, routes, the bridge, CNI state.
	px, err := proxy.New(proxy.Config{InNetNS: inHost, ServiceCIDR: "10.96.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	if err := px.SetService(proxy.Service{Namespace: "default", Name: "web", ClusterIP: "10.96.0.5",
		Ports: []proxy.ServicePort{{Protocol: proxy.TCP, Port: 80, Endpoints: []proxy.Endpoint{{IP: "10.244.0.2", Port: 8080}}}}}); err != nil {
		t.Fatal(err)
	}
	if err := px.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	routes, err := proxy.NewRoutes(proxy.RoutesConfig{InNetNS: inHost, NodeName: "n1", ServiceCIDR: "10.96.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	if err := inHost(func() error {
		return netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: netns.DefaultCNIBridge}})
	}); err != nil {
		t.Fatal(err)
	}
	if err := routes.Sync(ctx, map[string]proxy.NodeRoute{}); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	if err := os.MkdirAll(filepath.Join(state, "cni", "ipam"), 0o755); err != nil {
		t.Fatal(err)
	}
	pod, err := netns.Create(filepath.Join(state, "netns"), "pod")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Delete(pod) })
	cleanup := func() error { return cleanupNetwork(ctx, state, inHost) }

	if err := cleanup(); err == nil || !strings.Contains(err.Error(), "1 network namespace(s) of pods are still pinned") {
		t.Errorf("cleanup with a pod's namespace pinned: %v, want a refusal", err)
	}
	if got := netnstest.IPTables(t, host, "nat"); !strings.Contains(got, "SKIFF-SERVICES") {
		t.Fatalf("a refused cleanup removed the service chains:\n%s", got)
	}
	if err := netns.Delete(pod); err != nil {
		t.Fatal(err)
	}
	// A spare a node that died left is not a pod: it goes too.
	spare, err := netns.Create(filepath.Join(state, "netns", ".spare"), "s1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Delete(spare) })
	if err := cleanup(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := netns.IsPinned(spare); ok {
		t.Errorf("the spare namespace %s is still pinned after cleanup", spare)
	}
	for _, table := range []string{"nat", "filter"} {
		if got := netnstest.IPTables(t, host, table); strings.Contains(got, "SKIFF") {
			t.Errorf("%s table after cleanup:\n%s", table, got)
		}
	}
	if after := netnstest.Snapshot(t, host); after != before {
		t.Errorf("the host namespace after cleanup differs from before:\n%s", netnstest.Diff(before, after))
	}
	if _, err := os.Stat(filepath.Join(state, "cni")); !os.IsNotExist(err) {
		t.Errorf("CNI state after cleanup: %v, want it gone", err)
	}
}
