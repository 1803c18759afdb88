package netns_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"skiff.dev/skiff/netns"
	"skiff.dev/skiff/netns/netnstest"
)

const testCIDR = "10.99.0.0/24"

// newCNI is a CNI network whose plugins run in a namespace of the test's.
func newCNI(t *testing.T, confDir string) (*netns.CNI, string, string) {
	t.Helper()
	host := netnstest.HostNamespace(t)
	state := t.TempDir()
	c, err := netns.NewCNI(netns.CNIConfig{StateDir: state, HostNSPath: host, ConfDir: confDir})
	if err != nil {
		t.Fatal(err)
	}
	return c, host, state
}

// pod makes a pod namespace and tears its network down (idempotently)
// and deletes it when the test ends.
func pod(t *testing.T, c *netns.CNI, name string) string {
	t.Helper()
	path, err := netns.Create(filepath.Join(t.TempDir()), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Teardown(context.Background(), name, path); err != nil {
			t.Error(err)
		}
		if err := netns.Delete(path); err != nil {
			t.Error(err)
		}
	})
	return path
}

// ipamFiles are host-local's reservations: one file named by each IP.
func ipamFiles(t *testing.T, state string) []string {
	t.Helper()
	var ips []string
	filepath.WalkDir(filepath.Join(state, "ipam"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && net.ParseIP(d.Name()) != nil {
			ips = append(ips, d.Name())
		}
		return nil
	})
	slices.Sort(ips)
	return ips
}

func linkNames(t *testing.T, path string) []string {
	t.Helper()
	var names []string
	do := func() error {
		links, err := netlink.LinkList()
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return err
	}
	var err error
	if path == "" {
		err = do()
	} else {
		err = netns.Do(path, do)
	}
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

// TestCNITwoPods: two pods of skiff's own network get distinct addresses
// in the pod CIDR and reach each other over TCP; the bridge, veths and
// masquerade rules are in the host namespace the plugins ran in, not the
// root one; Teardown frees the address and is idempotent.
func TestCNITwoPods(t *testing.T) {
	netnstest.NeedCNI(t)
	rootLinks := linkNames(t, "")
	c, host, state := newCNI(t, "")
	a, b := pod(t, c, "pod-a"), pod(t, c, "pod-b")
	ctx := context.Background()

	if ok, reason := c.Ready(); ok || reason != "no pod CIDR yet" {
		t.Errorf("Ready before a pod CIDR = %v, %q; want false, \"no pod CIDR yet\"", ok, reason)
	}
	if _, err := c.Setup(ctx, "pod-a", a); !errors.Is(err, netns.ErrNotReady) || !strings.Contains(err.Error(), "no pod CIDR yet") {
		t.Fatalf("Setup before a pod CIDR = %v; want ErrNotReady, no pod CIDR yet", err)
	}
	for _, bad := range []string{"10.99.0.0", "10.99.0.1/24", "10.99.0.0/31", "10.1.0.0/24,10.2.0.0/24"} {
		if err := c.SetPodCIDR(bad); err == nil || !strings.Contains(err.Error(), "pod CIDR") {
			t.Errorf("SetPodCIDR(%q) = %v; want an error naming the pod CIDR", bad, err)
		}
	}
	if err := c.SetPodCIDR(testCIDR); err != nil {
		t.Fatal(err)
	}
	if ok, reason := c.Ready(); !ok {
		t.Fatalf("Ready with a pod CIDR = false, %q", reason)
	}

	ra, err := c.Setup(ctx, "pod-a", a)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := c.Setup(ctx, "pod-b", b)
	if err != nil {
		t.Fatal(err)
	}
	_, cidr, _ := net.ParseCIDR(testCIDR)
	for _, r := range []netns.Result{ra, rb} {
		if len(r.IPs) != 1 || !cidr.Contains(net.ParseIP(r.IPs[0])) {
			t.Fatalf("pod IPs %v; want one address in %s", r.IPs, testCIDR)
		}
	}
	if ra.IPs[0] == rb.IPs[0] {
		t.Fatalf("both pods got %s", ra.IPs[0])
	}
	if got, want := ipamFiles(t, state), []string{ra.IPs[0], rb.IPs[0]}; !slices.Equal(got, sorted(want)) {
		t.Errorf("IPAM reservations %v; want %v", got, sorted(want))
	}

	// b listens in its namespace; a connects to b's pod IP from its own.
	f, err := netns.ListenTCP(b, 8080)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte("hello from b\n"))
			c.Close()
		}
	}()
	var got []byte
	err = netns.Do(a, func() error {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(rb.IPs[0], "8080"), 5*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		got = make([]byte, 64)
		n, _ := conn.Read(got)
		got = got[:n]
		return nil
	})
	if err != nil || string(got) != "hello from b\n" {
		t.Fatalf("pod a to pod b (%s:8080): %q, %v", rb.IPs[0], got, err)
	}

	hostLinks := linkNames(t, host)
	if !slices.Contains(hostLinks, netns.DefaultCNIBridge) || len(hostLinks) != 4 {
		t.Errorf("host namespace links %v; want lo, %s and two veths", hostLinks, netns.DefaultCNIBridge)
	}
	if now := linkNames(t, ""); !slices.Equal(now, rootLinks) {
		t.Errorf("root namespace links changed: %v, were %v", now, rootLinks)
	}
	if nat := netnstest.IPTables(t, host, "nat"); !strings.Contains(nat, ra.IPs[0]) {
		t.Errorf("no masquerade rule for %s in the host namespace's nat table:\n%s", ra.IPs[0], nat)
	}

	if err := c.Teardown(ctx, "pod-a", a); err != nil {
		t.Fatal(err)
	}
	if got := ipamFiles(t, state); !slices.Equal(got, rb.IPs) {
		t.Errorf("IPAM reservations after pod a's teardown %v; want %v", got, rb.IPs)
	}
	if nat := netnstest.IPTables(t, host, "nat"); strings.Contains(nat, ra.IPs[0]) {
		t.Errorf("masquerade rule for %s left after teardown:\n%s", ra.IPs[0], nat)
	}
	if n := len(linkNames(t, host)); n != 3 {
		t.Errorf("host namespace has %d links after pod a's teardown; want 3", n)
	}
	if err := c.Teardown(ctx, "pod-a", a); err != nil {
		t.Errorf("second Teardown = %v; want nil", err)
	}
	if err := c.Teardown(ctx, "never-set-up", a); err != nil {
		t.Errorf("Teardown of a pod never set up = %v; want nil", err)
	}
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

// TestCNITeardownAfterRestart: a new CNI on the same state dir, before it
// knows the pod CIDR, tears down a pod set up by the old one with the
// cached config.
func TestCNITeardownAfterRestart(t *testing.T) {
	netnstest.NeedCNI(t)
	c, host, state := newCNI(t, "")
	p := pod(t, c, "pod")
	if err := c.SetPodCIDR(testCIDR); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Setup(context.Background(), "pod", p); err != nil {
		t.Fatal(err)
	}
	c2, err := netns.NewCNI(netns.CNIConfig{StateDir: state, HostNSPath: host})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := c2.Ready(); ok {
		t.Error("a restarted CNI is ready before it is given a pod CIDR")
	}
	if err := c2.Teardown(context.Background(), "pod", p); err != nil {
		t.Fatal(err)
	}
	if got := ipamFiles(t, state); len(got) != 0 {
		t.Errorf("IPAM reservations after teardown: %v", got)
	}
	if n := len(linkNames(t, host)); n != 2 {
		t.Errorf("host namespace has %d links after teardown; want lo and the bridge", n)
	}
}

// TestCNISetupFailure: a user's conflist that cannot work fails Setup with
// an error naming the file, field or plugin, and leaves no veth, address
// reservation or cached result behind.
func TestCNISetupFailure(t *testing.T) {
	netnstest.NeedCNI(t)
	bridge := func(ipamDir string) string {
		return fmt.Sprintf(`{"type": "bridge", "bridge": "cni-test0", "isGateway": true, "ipMasq": true,
			"ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": "10.98.0.0/24"}]]}}`, ipamDir)
	}
	for _, tc := range []struct {
		name    string
		conf    func(ipamDir string) string
		wantErr []string
	}{
		{"not JSON", func(string) string { return `{"name": "x",` }, []string{"net.conflist", "error parsing configuration"}},
		{"no plugins", func(string) string { return `{"cniVersion": "1.0.0", "name": "x", "plugins": []}` }, []string{"net.conflist", "plugins"}},
		{"missing plugin", func(d string) string {
			return `{"cniVersion": "1.0.0", "name": "x", "plugins": [` + bridge(d) + `, {"type": "no-such-plugin"}]}`
		}, []string{"plugins[1].type", `"no-such-plugin" not found`}},
		{"plugin fails half way", func(d string) string {
			return `{"cniVersion": "1.0.0", "name": "x", "plugins": [` + bridge(d) +
				`, {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.no_such_sysctl": "1"}}]}`
		}, []string{`type="tuning"`, "failed (add)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			confDir := t.TempDir()
			c, host, state := newCNI(t, confDir)
			ipamDir := filepath.Join(state, "ipam")
			if err := os.WriteFile(filepath.Join(confDir, "net.conflist"), []byte(tc.conf(ipamDir)), 0o644); err != nil {
				t.Fatal(err)
			}
			p := pod(t, c, "pod")
			_, err := c.Setup(context.Background(), "pod", p)
			if err == nil {
				t.Fatal("Setup succeeded")
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Setup error %q does not say %q", err, w)
				}
			}
			if ok, reason := c.Ready(); ok && tc.name != "plugin fails half way" {
				t.Errorf("Ready = true with a broken config")
			} else if !ok && reason == "" {
				t.Error("Ready = false without a reason")
			}
			for _, l := range linkNames(t, host) {
				if strings.HasPrefix(l, "veth") {
					t.Errorf("veth %s left in the host namespace", l)
				}
			}
			if got := linkNames(t, p); !slices.Equal(got, []string{"lo"}) {
				t.Errorf("pod namespace links %v; want only lo", got)
			}
			if got := ipamFiles(t, state); len(got) != 0 {
				t.Errorf("IPAM reservations left: %v", got)
			}
			if entries, _ := os.ReadDir(filepath.Join(state, "cache", "results")); len(entries) != 0 {
				t.Errorf("cached results left: %v", entries)
			}
			if nat := netnstest.IPTables(t, host, "nat"); strings.Contains(nat, "10.98.0.") {
				t.Errorf("masquerade rule left:\n%s", nat)
			}
		})
	}
}
