package proxy

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routeLines returns the namespace's IPv4 routes of every table and its
// rules, as `ip route` and `ip rule` show them, one a line.
func routeLines(t *testing.T, ns string) []string {
	t.Helper()
	var lines []string
	for line := range strings.Lines(runIn(t, ns, "ip", "-4", "route", "show", "table", "all")) {
		if !strings.Contains(line, "table local") {
			lines = append(lines, strings.TrimSpace(line))
		}
	}
	for line := range strings.Lines(runIn(t, ns, "ip", "-4", "rule")) {
		lines = append(lines, "rule "+strings.TrimSpace(line))
	}
	return lines
}

func TestRoutes(t *testing.T) {
	requireRoot(t)
	dir := nsDir(t)
	node, peer := newNS(t, dir, "node"), newNS(t, dir, "peer")
	h := handleAt(t, node)
	setSysctl(t, node, "net/ipv4/ip_forward", "1")
	(&cluster{}).veth(t, h, "eth1", peer, "10.98.0.2/24", "10.98.0.1", nil)
	addrUp(t, h, "eth1", "10.98.0.1/24")
	// A route of someone else's, which must stay.
	must(t, "add static route", h.RouteAdd(&netlink.Route{Dst: mustCIDR(t, "10.200.0.0/16"), Gw: net.ParseIP("10.98.0.9"), Protocol: unix.RTPROT_STATIC}))
	before := routeLines(t, node)

	r, err := NewRoutes(RoutesConfig{InNetNS: inNS(node), NodeName: "a", ServiceCIDR: "10.96.0.0/16"})
	must(t, "new routes", err)
	t.Cleanup(func() { r.Cleanup(context.Background()) })
	ctx := context.Background()
	nodes := map[string]NodeRoute{
		"a": {IP: "10.98.0.1", PodCIDR: "10.244.0.0/24"},
		"b": {IP: "10.98.0.2", PodCIDR: "10.244.1.0/24"},
		"c": {IP: "10.98.0.3", PodCIDR: "10.244.2.0/24"},
	}
	must(t, "sync", r.Sync(ctx, nodes))
	must(t, "sync again (idempotent)", r.Sync(ctx, nodes))
	got := routeLines(t, node)
	for _, want := range []string{
		"10.244.1.0/24 via 10.98.0.2 dev eth1 proto 83",
		"10.244.2.0/24 via 10.98.0.3 dev eth1 proto 83",
		"unreachable 10.96.0.0/16 proto 83",
		"10.200.0.0/16 via 10.98.0.9 dev eth1 proto static",
		"10.96.0.0/16 dev lo table 83 proto 83 scope link src 10.98.0.1",
		"rule 1000:	from all to 10.96.0.0/16 iif lo lookup 83 proto 83",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("routes lack %q:\n%s", want, strings.Join(got, "\n"))
		}
	}
	if slices.ContainsFunc(got, func(l string) bool { return strings.HasPrefix(l, "10.244.0.0/24") }) {
		t.Errorf("a route to this node's own pod CIDR:\n%s", strings.Join(got, "\n"))
	}

	t.Run("a service address without a rule is refused at once", func(t *testing.T) {
		// From the node itself, the proxier's catch-all refuses it.
		p, err := New(Config{InNetNS: inNS(node), ServiceCIDR: "10.96.0.0/16"})
		must(t, "new proxier", err)
		must(t, "sync", p.Sync(ctx))
		defer func() { must(t, "cleanup", p.Cleanup(ctx)) }()
		for _, tt := range []struct {
			from string
			want []error
		}{
			{peer, []error{syscall.EHOSTUNREACH, syscall.ENETUNREACH}},
			{node, []error{syscall.ECONNREFUSED}},
		} {
			start := time.Now()
			_, err := dial(tt.from, "10.96.0.10:80")
			if !slices.ContainsFunc(tt.want, func(e error) bool { return errors.Is(err, e) }) {
				t.Errorf("dial a service address from %s: %v, want one of %v", tt.from, err, tt.want)
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("refusal took %v", took)
			}
		}
	})
	t.Run("a node gone, its route goes", func(t *testing.T) {
		delete(nodes, "c")
		nodes["b"] = NodeRoute{IP: "10.98.0.4", PodCIDR: "10.244.1.0/24"} // b moved
		must(t, "sync", r.Sync(ctx, nodes))
		got := routeLines(t, node)
		if slices.ContainsFunc(got, func(l string) bool { return strings.HasPrefix(l, "10.244.2.0/24") }) {
			t.Errorf("route to c's pods stayed:\n%s", strings.Join(got, "\n"))
		}
		if !slices.Contains(got, "10.244.1.0/24 via 10.98.0.4 dev eth1 proto 83") {
			t.Errorf("route to b's pods not moved:\n%s", strings.Join(got, "\n"))
		}
	})
	t.Run("bad input changes nothing", func(t *testing.T) {
		was := routeLines(t, node)
		for _, tt := range []struct {
			nodes map[string]NodeRoute
			want  string
		}{
			{map[string]NodeRoute{"b": {IP: "10.98.0.2", PodCIDR: "10.244.1.0/24"}, "d": {IP: "nope", PodCIDR: "10.244.3.0/24"}}, `node d: ip: "nope"`},
			{map[string]NodeRoute{"d": {IP: "10.98.0.2", PodCIDR: "10.244.3.1/24"}}, "node d: podCIDR"},
			{map[string]NodeRoute{"b": {IP: "10.98.0.2", PodCIDR: "10.244.1.0/24"}, "d": {IP: "10.98.0.5", PodCIDR: "10.244.1.0/24"}}, "is node b's too"},
		} {
			err := r.Sync(ctx, tt.nodes)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Sync(%v) = %v, want an error saying %q", tt.nodes, err, tt.want)
			}
		}
		if now := routeLines(t, node); !slices.Equal(now, was) {
			t.Errorf("routes changed:\n%s\nwere:\n%s", strings.Join(now, "\n"), strings.Join(was, "\n"))
		}
	})
	t.Run("cleanup leaves only the routes that were there", func(t *testing.T) {
		must(t, "cleanup", r.Cleanup(ctx))
		if after := routeLines(t, node); !slices.Equal(after, before) {
			t.Errorf("after cleanup:\n%s\nwant:\n%s", strings.Join(after, "\n"), strings.Join(before, "\n"))
		}
	})
}

func mustCIDR(t *testing.T, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	must(t, "parse "+s, err)
	return n
}
