package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultRouteProtocol is the route protocol number that marks the routes
// Routes installs (RTPROT_*, shown by `ip route` as "proto 83"), so that it
// only ever removes its own. It is not among the numbers iproute2 names.
const DefaultRouteProtocol = 83

// NodeRoute is what the routes to one node's pods need.
type NodeRoute struct {
	IP      string // the node's IPv4 address, on a link this node shares
	PodCIDR string // the node's pod CIDR, e.g. 10.244.1.0/24
}

// RoutesConfig configures Routes.
type RoutesConfig struct {
	// InNetNS runs fn on a thread inside the network namespace to program;
	// nil: the caller's (the node's).
	InNetNS func(fn func() error) error
	// NodeName is this node's name: its own pod CIDR gets no route.
	NodeName string
	// ServiceCIDR, when set, gets an unreachable route, so that a service
	// address without a rule is refused here instead of being routed out.
	ServiceCIDR string
	// Protocol marks skiff's routes (default DefaultRouteProtocol).
	Protocol int
	// Timeout bounds each netlink request (default 5s).
	Timeout time.Duration
}

// Routes installs host-gw routes to the other nodes' pod CIDRs
// ("<podCIDR> via <nodeIP>") and the service CIDR's unreachable route in
// the main table, and removes the ones it installed that are no longer
// wanted. Only routes carrying its protocol number are ever changed or
// removed. Its methods are safe for concurrent use.
type Routes struct {
	cfg     RoutesConfig
	service *net.IPNet
	mu      sync.Mutex
}

// NewRoutes checks the configuration; nothing touches the kernel before
// the first Sync.
//
// Known limit: with ServiceCIDR set, processes of the node's own network
// namespace (host-network ones) cannot reach cluster IPs at all, because a
// local connect() looks the route up before nat OUTPUT DNATs, and finds
// the unreachable route. Pods and outside clients are DNATed in PREROUTING,
// before routing, and are not affected.
func NewRoutes(cfg RoutesConfig) (*Routes, error) {
	if cfg.Protocol == 0 {
		cfg.Protocol = DefaultRouteProtocol
	}
	if cfg.Protocol <= unix.RTPROT_STATIC || cfg.Protocol > 255 {
		return nil, fmt.Errorf("new routes: protocol %d: must be above %d (static) and at most 255", cfg.Protocol, unix.RTPROT_STATIC)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	r := &Routes{cfg: cfg}
	if cfg.ServiceCIDR != "" {
		p, err := parseCIDR4(cfg.ServiceCIDR)
		if err != nil {
			return nil, fmt.Errorf("new routes: serviceCIDR: %w", err)
		}
		r.service = ipNet(p)
	}
	return r, nil
}

// wantRoute is one route Routes keeps.
type wantRoute struct {
	dst netip.Prefix
	gw  netip.Addr // invalid: unreachable
}

// Sync makes skiff's routes those for nodes (node name -> route), minus
// this node's own. The input is checked whole first: a bad entry is an
// error naming the node and the field, and nothing changes. A route the
// kernel refuses (a node IP not on any link) does not stop the others; the
// errors are returned together. Sync is idempotent.
func (r *Routes) Sync(ctx context.Context, nodes map[string]NodeRoute) error {
	want, err := r.plan(nodes)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.apply(ctx, want)
}

// Cleanup removes every route carrying skiff's protocol number.
func (r *Routes) Cleanup(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.apply(ctx, nil)
}

func (r *Routes) plan(nodes map[string]NodeRoute) ([]wantRoute, error) {
	names := make([]string, 0, len(nodes))
	for name := range nodes {
		names = append(names, name)
	}
	slices.Sort(names)
	var want []wantRoute
	owner := map[netip.Prefix]string{}
	for _, name := range names {
		if name == r.cfg.NodeName {
			continue
		}
		n := nodes[name]
		ip, err := netip.ParseAddr(n.IP)
		if err != nil || !ip.Is4() || ip.IsUnspecified() {
			return nil, fmt.Errorf("routes: node %s: ip: %q is not an IPv4 address", name, n.IP)
		}
		dst, err := parseCIDR4(n.PodCIDR)
		if err != nil {
			return nil, fmt.Errorf("routes: node %s: podCIDR: %w", name, err)
		}
		if other, ok := owner[dst]; ok {
			return nil, fmt.Errorf("routes: node %s: podCIDR: %s is node %s's too", name, dst, other)
		}
		owner[dst] = name
		want = append(want, wantRoute{dst: dst, gw: ip})
	}
	if r.service != nil {
		p, _ := netip.ParsePrefix(r.service.String())
		want = append(want, wantRoute{dst: p})
	}
	return want, nil
}

// apply lists skiff's routes, deletes those not in want, and adds or
// replaces the wanted ones.
func (r *Routes) apply(ctx context.Context, want []wantRoute) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sync routes: %w", err)
	}
	run := r.cfg.InNetNS
	if run == nil {
		run = func(fn func() error) error { return fn() }
	}
	return run(func() error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("sync routes: netlink: %w", err)
		}
		defer h.Close()
		if err := h.SetSocketTimeout(r.cfg.Timeout); err != nil {
			return fmt.Errorf("sync routes: netlink: %w", err)
		}
		filter := &netlink.Route{Protocol: netlink.RouteProtocol(r.cfg.Protocol), Table: unix.RT_TABLE_MAIN}
		have, err := h.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("sync routes: list: %w", err)
		}
		var errs []error
		for _, rt := range have {
			if !slices.ContainsFunc(want, func(w wantRoute) bool { return same(rt, w) }) {
				if err := h.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) {
					errs = append(errs, fmt.Errorf("delete route %s: %w", describe(rt), err))
				}
			}
		}
		for _, w := range want {
			if slices.ContainsFunc(have, func(rt netlink.Route) bool { return same(rt, w) }) {
				continue
			}
			rt := netlink.Route{Dst: ipNet(w.dst), Table: unix.RT_TABLE_MAIN, Protocol: netlink.RouteProtocol(r.cfg.Protocol)}
			if w.gw.IsValid() {
				rt.Gw = net.IP(w.gw.AsSlice())
			} else {
				rt.Type = unix.RTN_UNREACHABLE
			}
			// Add, not replace: a route to the same destination that
			// skiff did not install is left alone and reported.
			if err := h.RouteAdd(&rt); errors.Is(err, unix.EEXIST) {
				errs = append(errs, fmt.Errorf("add route %s: a route to %s that skiff did not install is in the way", describe(rt), w.dst))
			} else if err != nil {
				errs = append(errs, fmt.Errorf("add route %s: %w", describe(rt), err))
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("sync routes: %w", errors.Join(errs...))
		}
		return nil
	})
}

// same reports whether a kernel route is the wanted one.
func same(rt netlink.Route, w wantRoute) bool {
	if rt.Dst == nil || rt.Dst.String() != w.dst.String() {
		return false
	}
	if !w.gw.IsValid() {
		return rt.Type == unix.RTN_UNREACHABLE
	}
	return rt.Type == unix.RTN_UNICAST && rt.Gw != nil && rt.Gw.Equal(net.IP(w.gw.AsSlice()))
}

func describe(rt netlink.Route) string {
	if rt.Type == unix.RTN_UNREACHABLE {
		return "unreachable " + rt.Dst.String()
	}
	return fmt.Sprintf("%s via %s", rt.Dst, rt.Gw)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}
}
