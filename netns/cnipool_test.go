package netns_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"skiff.dev/skiff/netns"
	"skiff.dev/skiff/netns/netnstest"
)

// newCNIPool is a pool over c pinning under dir, closed when the test ends.
func newCNIPool(t *testing.T, dir string, c *netns.CNI, size int) *netns.CNIPool {
	t.Helper()
	p, err := netns.NewCNIPool(dir, c, size, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestCNIPool: a pool makes no spare before the pod CIDR is known, then
// keeps its size of spares attached to skiff's own network; Take pins one
// under the pod's name, with its address and a claim on its CNI ID, and
// Teardown with that ID frees the address. A spare left by a dead process
// is torn down at the next start, and Close tears down the spares: the
// host namespace's links, addresses, routes and iptables rules and
// host-local's reservations end as they were before the pool.
func TestCNIPool(t *testing.T) {
	netnstest.NeedCNI(t)
	c, host, state := newCNI(t, "")
	ctx := context.Background()
	dir := t.TempDir()
	if err := c.SetPodCIDR(testCIDR); err != nil {
		t.Fatal(err)
	}
	// A warm-up pod, so the bridge (which stays, as with containerd) is in
	// both snapshots.
	warm := pod(t, c, "warm-up")
	if _, err := c.Setup(ctx, "warm-up", warm); err != nil {
		t.Fatal(err)
	}
	if err := c.Teardown(ctx, "warm-up", warm); err != nil {
		t.Fatal(err)
	}
	before := netnstest.Snapshot(t, host)

	// What a process that died with a spare leaves behind.
	dead, err := netns.Create(filepath.Join(dir, ".prenet"), "spare-dead")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Delete(dead) })
	if _, err := c.Setup(ctx, "spare-dead", dead); err != nil {
		t.Fatal(err)
	}

	p := newCNIPool(t, dir, c, 2)
	if ok, _ := netns.IsPinned(dead); ok {
		t.Error("the spare of a dead process is still pinned")
	}
	netnstest.Eventually(t, 10*time.Second, func() bool { return p.Spares() == 2 },
		func() string { return "the pool never held 2 spares" })
	if got := ipamFiles(t, state); len(got) != 2 {
		t.Errorf("IPAM reservations with 2 spares (the dead one's freed): %v", got)
	}

	a, ok, err := p.Take("pod-a")
	if err != nil || !ok {
		t.Fatalf("Take = %v, %v; want a spare", ok, err)
	}
	t.Cleanup(func() { netns.Delete(a.Path) })
	_, cidr, _ := net.ParseCIDR(testCIDR)
	if a.Path != filepath.Join(dir, "pod-a") || !strings.HasPrefix(a.ID, "spare-") || len(a.Result.IPs) != 1 || !cidr.Contains(net.ParseIP(a.Result.IPs[0])) {
		t.Fatalf("Take = %+v; want pinned at %s, a spare's ID, one IP in %s", a, filepath.Join(dir, "pod-a"), testCIDR)
	}
	if got := p.Claimed("pod-a"); got != a.ID {
		t.Errorf("Claimed(pod-a) = %q; want %q", got, a.ID)
	}
	if err := p.Release("pod-a"); err != nil {
		t.Fatal(err)
	}
	if got := p.Claimed("pod-a"); got != "" {
		t.Errorf("Claimed after Release = %q", got)
	}
	if got := linkNames(t, a.Path); !slices.Equal(got, []string{"eth0", "lo"}) {
		t.Errorf("links of the taken namespace %v; want eth0, lo", got)
	}
	if !slices.Contains(ipamFiles(t, state), a.Result.IPs[0]) {
		t.Errorf("the taken pod's address %s is not reserved", a.Result.IPs[0])
	}
	netnstest.Eventually(t, 10*time.Second, func() bool { return p.Spares() == 2 },
		func() string { return "the pool was not filled again after a Take" })

	if err := c.Teardown(ctx, a.ID, a.Path); err != nil {
		t.Fatal(err)
	}
	if err := netns.Delete(a.Path); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(ipamFiles(t, state), a.Result.IPs[0]) {
		t.Errorf("the taken pod's address %s still reserved after Teardown with its ID", a.Result.IPs[0])
	}
	if nat := netnstest.IPTables(t, host, "nat"); strings.Contains(nat, a.Result.IPs[0]) {
		t.Errorf("masquerade rule for %s left after Teardown:\n%s", a.Result.IPs[0], nat)
	}

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if got := ipamFiles(t, state); len(got) != 0 {
		t.Errorf("IPAM reservations after Close: %v", got)
	}
	if left, _ := netns.List(filepath.Join(dir, ".prenet")); len(left) != 0 {
		t.Errorf("spare pins after Close: %v", left)
	}
	// The kernel takes the bridge's carrier (flag running) down a moment
	// after its last port goes.
	var after string
	netnstest.Eventually(t, 5*time.Second, func() bool { after = netnstest.Snapshot(t, host); return after == before },
		func() string { return "the host namespace differs after Close:\n" + netnstest.Diff(before, after) })
}

// TestCNIPoolPodCIDRChange: spares of an old pod CIDR are torn down when
// it changes, and a Take then gets an address of the new one; with a
// user's conflist in ConfDir, Take has no spare to give.
func TestCNIPoolPodCIDRChange(t *testing.T) {
	netnstest.NeedCNI(t)
	confDir := t.TempDir()
	c, host, state := newCNI(t, confDir)
	dir := t.TempDir()
	if err := c.SetPodCIDR(testCIDR); err != nil {
		t.Fatal(err)
	}
	p := newCNIPool(t, dir, c, 2)
	netnstest.Eventually(t, 10*time.Second, func() bool { return p.Spares() == 2 },
		func() string { return "the pool never held 2 spares" })

	const newCIDR = "10.98.0.0/24"
	if err := c.SetPodCIDR(newCIDR); err != nil {
		t.Fatal(err)
	}
	_, old, _ := net.ParseCIDR(testCIDR)
	inOld := func() []string {
		var in []string
		for _, ip := range ipamFiles(t, state) {
			if old.Contains(net.ParseIP(ip)) {
				in = append(in, ip)
			}
		}
		return in
	}
	netnstest.Eventually(t, 10*time.Second, func() bool { return len(inOld()) == 0 },
		func() string {
			return "addresses of the old pod CIDR still reserved: " + strings.Join(inOld(), " ")
		})
	// The bridge plugin will not give skiff0 a second subnet (as with
	// containerd, a node whose pod CIDR changes needs its bridge reset):
	// reset it here, and kick the pool with a Take, which finds none.
	err := netns.Do(host, func() error {
		br, err := netlink.LinkByName(netns.DefaultCNIBridge)
		if err != nil {
			return err
		}
		return netlink.LinkDel(br)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := p.Take("pod-early"); ok || err != nil {
		t.Fatalf("Take before spares of the new pod CIDR = %v, %v; want none", ok, err)
	}
	netnstest.Eventually(t, 10*time.Second, func() bool { return p.Spares() == 2 },
		func() string { return "no spares of the new pod CIDR" })
	a, ok, err := p.Take("pod-a")
	if err != nil || !ok {
		t.Fatalf("Take = %v, %v; want a spare", ok, err)
	}
	t.Cleanup(func() {
		c.Teardown(context.Background(), a.ID, a.Path)
		netns.Delete(a.Path)
	})
	_, cidr, _ := net.ParseCIDR(newCIDR)
	if len(a.Result.IPs) != 1 || !cidr.Contains(net.ParseIP(a.Result.IPs[0])) {
		t.Errorf("IPs after the change %v; want one in %s", a.Result.IPs, newCIDR)
	}

	// A user's network: its plugins may need the pod's identity.
	user := `{"cniVersion": "1.0.0", "name": "user", "plugins": [{"type": "bridge", "bridge": "user0", "ipam": {"type": "host-local", "subnet": "10.96.0.0/24"}}]}`
	if err := os.WriteFile(filepath.Join(confDir, "10-user.conflist"), []byte(user), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := p.Take("pod-b"); ok || err != nil {
		t.Errorf("Take with a user's conflist = %v, %v; want none", ok, err)
	}
	netnstest.Eventually(t, 10*time.Second, func() bool { return p.Spares() == 0 },
		func() string { return "spares of skiff's network kept with a user's conflist" })
}

// BenchmarkCNIPoolTake: what a sandbox pays for a namespace attached
// ahead: Take (a claim file, a pin file, a bind mount, an unmount). The
// refill, Release and the teardown are not timed.
func BenchmarkCNIPoolTake(b *testing.B) {
	netnstest.NeedCNI(b)
	host := netnstest.HostNamespace(b)
	c, err := netns.NewCNI(netns.CNIConfig{StateDir: b.TempDir(), HostNSPath: host})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.SetPodCIDR(testCIDR); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	p, err := netns.NewCNIPool(dir, c, 4, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	var d []time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		netnstest.Eventually(b, 10*time.Second, func() bool { return p.Spares() == 4 }, func() string { return "the pool was not refilled" })
		name := "pod-" + strconv.Itoa(i)
		b.StartTimer()
		start := time.Now()
		a, ok, err := p.Take(name)
		d = append(d, time.Since(start))
		if err != nil || !ok {
			b.Fatalf("Take = %v, %v", ok, err)
		}
		b.StopTimer()
		p.Release(name)
		c.Teardown(context.Background(), a.ID, a.Path)
		netns.Delete(a.Path)
		b.StartTimer()
	}
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Microseconds()), "p50-µs")
}
