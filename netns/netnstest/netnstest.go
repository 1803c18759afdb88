// Package netnstest helps tests that attach pods through CNI: a network
// namespace of the test's own to play the node's (so that bridges, veths,
// routes and iptables rules never land in the root namespace) and
// snapshots of what is in one.
package netnstest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"skiff.dev/skiff/netns"
)

// NeedCNI skips the test, saying why, unless it runs as root with the CNI
// plugins of skiff's own network and iptables installed.
func NeedCNI(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, bridges and veths")
	}
	if !netns.HavePlugins(nil) {
		t.Skipf("needs the CNI plugins bridge, host-local and portmap in %v (Debian package containernetworking-plugins)", netns.DefaultCNIBinDirs)
	}
	if _, err := exec.LookPath("iptables-save"); err != nil {
		t.Skip("needs iptables (the bridge plugin's masquerade rules)")
	}
}

// HostNamespace creates a network namespace to run CNI plugins in, as the
// node's, and deletes it (and with it the bridge, veths and rules made in
// it) when the test ends. IPv6 is off in it: the kernel's link-local
// addresses and their routes come and go on their own time (duplicate
// address detection), which would make snapshots differ for nothing.
func HostNamespace(t testing.TB) string {
	t.Helper()
	path, err := netns.Create(t.TempDir(), "host")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.Delete(path); err != nil {
			t.Error(err)
		}
	})
	err = netns.Do(path, func() error {
		for _, f := range []string{"all", "default"} {
			// /proc/sys/net is the opening thread's namespace's.
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+f+"/disable_ipv6", []byte("1"), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("turn IPv6 off in the test's host namespace: %v", err)
	}
	return path
}

// counters are iptables-save's packet and byte counts.
var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// Snapshot describes the namespace at path: its links, addresses, routes
// and iptables rules (nat and filter tables), one sorted line each, without
// counters, timestamps or carrier, so that two snapshots compare equal when nothing
// was left behind.
func Snapshot(t testing.TB, path string) string {
	t.Helper()
	var lines []string
	err := netns.Do(path, func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			a := l.Attrs()
			// Not running (carrier): a bridge's follows its ports, and the
			// kernel updates it a moment after the last one goes.
			lines = append(lines, fmt.Sprintf("link %s %s master=%d flags=%v", a.Name, l.Type(), a.MasterIndex, a.Flags&^net.FlagRunning))
			addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
			if err != nil {
				return err
			}
			for _, ad := range addrs {
				lines = append(lines, fmt.Sprintf("addr %s %s", a.Name, ad.IPNet))
			}
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: 0}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		for _, r := range routes {
			lines = append(lines, fmt.Sprintf("route table=%d dst=%v gw=%v dev=%d src=%v", r.Table, r.Dst, r.Gw, r.LinkIndex, r.Src))
		}
		for _, table := range []string{"nat", "filter"} {
			out, err := exec.Command("iptables-save", "-t", table).CombinedOutput()
			if err != nil {
				return fmt.Errorf("iptables-save -t %s: %v: %s", table, err, out)
			}
			for _, l := range strings.Split(string(bytes.TrimSpace(out)), "\n") {
				if l == "" || strings.HasPrefix(l, "#") {
					continue
				}
				lines = append(lines, "iptables "+table+" "+counters.ReplaceAllString(l, ""))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot of %s: %v", path, err)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// IPTables is iptables-save's output for table in the namespace at path.
func IPTables(t testing.TB, path, table string) string {
	t.Helper()
	var out []byte
	err := netns.Do(path, func() error {
		var err error
		out, err = exec.Command("iptables-save", "-t", table).CombinedOutput()
		return err
	})
	if err != nil {
		t.Fatalf("iptables-save -t %s: %v: %s", table, err, out)
	}
	return string(out)
}

// Diff lists the lines only in a and only in b.
func Diff(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ma, mb := in(a), in(b)
	var d []string
	for _, l := range strings.Split(a, "\n") {
		if !mb[l] {
			d = append(d, "- "+l)
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if !ma[l] {
			d = append(d, "+ "+l)
		}
	}
	return strings.Join(d, "\n")
}
