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
// and the rule Routes installs (RTPROT_*, shown by `ip route` as "proto
// 83"), so that it only ever removes its own. It is not among the numbers
// iproute2 names.
const DefaultRouteProtocol = 83

// Defaults for the node's own access to cluster IPs (see RoutesConfig).
const (
	DefaultLocalTable        = 83
	DefaultLocalRulePriority = 1000
)

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
	// NodeName is this node's name: its own pod CIDR gets no route, and
	// its IP is the source of its own connections to cluster IPs.
	NodeName string
	// ServiceCIDR, when set, gets an unreachable route in the main table,
	// so that a service address without a rule is refused here instead of
	// being routed out.
	//
	// The node's own processes would find that route too (a local
	// connect() looks the route up before nat OUTPUT can DNAT), so, when
	// the nodes given to Sync include this node, locally made packets to
	// the service CIDR are sent by a rule ("iif lo", LocalRulePriority) to
	// table LocalTable, where the CIDR goes to the loopback device from the
	// node's IP: nat OUTPUT then DNATs them to an endpoint, and the
	// proxier's catch-all (Config.ServiceCIDR) refuses the rest.
	ServiceCIDR       string
	LocalTable        int // default DefaultLocalTable
	LocalRulePriority int // default DefaultLocalRulePriority
	// Protocol marks skiff's routes and rule (default DefaultRouteProtocol).
	Protocol int
	// Timeout bounds each netlink request (default 5s).
	Timeout time.Duration
}

// Routes installs host-gw routes to the other nodes' pod CIDRs
// ("<podCIDR> via <nodeIP>") and the service CIDR's routes, and removes
// the ones it installed that are no longer wanted. Only routes and rules
// carrying its protocol number are ever changed or removed. Its methods
// are safe for concurrent use.
type Routes struct {
	cfg     RoutesConfig
	service netip.Prefix // invalid: none
	mu      sync.Mutex
}

// NewRoutes checks the configuration; nothing touches the kernel before
// the first Sync.
func NewRoutes(cfg RoutesConfig) (*Routes, error) {
	if cfg.Protocol == 0 {
		cfg.Protocol = DefaultRouteProtocol
	}
	if cfg.Protocol <= unix.RTPROT_STATIC || cfg.Protocol > 255 {
		return nil, fmt.Errorf("new routes: protocol %d: must be above %d (static) and at most 255", cfg.Protocol, unix.RTPROT_STATIC)
	}
	if cfg.LocalTable == 0 {
		cfg.LocalTable = DefaultLocalTable
	}
	if cfg.LocalTable < 1 || cfg.LocalTable >= unix.RT_TABLE_COMPAT {
		return nil, fmt.Errorf("new routes: localTable %d: must be between 1 and %d", cfg.LocalTable, unix.RT_TABLE_COMPAT-1)
	}
	if cfg.LocalRulePriority == 0 {
		cfg.LocalRulePriority = DefaultLocalRulePriority
	}
	if cfg.LocalRulePriority < 1 || cfg.LocalRulePriority >= 32766 {
		return nil, fmt.Errorf("new routes: localRulePriority %d: must be between 1 and 32765, before the main table's rule", cfg.LocalRulePriority)
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
		r.service = p
	}
	return r, nil
}

// wantRoute is one route Routes keeps.
type wantRoute struct {
	table int
	dst   netip.Prefix
	gw    netip.Addr // via this gateway; invalid: see local and unreachable
	local bool       // to the loopback device, from src
	src   netip.Addr
}

// Sync makes skiff's routes those for nodes (node name -> route): one to
// each other node's pods, and the service CIDR's. The input is checked
// whole first: a bad entry is an error naming the node and the field, and
// nothing changes. A route the kernel refuses (a node IP not on any link)
// does not stop the others; the errors are returned together. Sync is
// idempotent.
func (r *Routes) Sync(ctx context.Context, nodes map[string]NodeRoute) error {
	routes, local, err := r.plan(nodes)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.apply(ctx, routes, local)
}

// Cleanup removes every route and rule carrying skiff's protocol number.
func (r *Routes) Cleanup(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.apply(ctx, nil, false)
}

// plan returns the routes wanted and whether the node's own access rule is.
func (r *Routes) plan(nodes map[string]NodeRoute) ([]wantRoute, bool, error) {
	names := make([]string, 0, len(nodes))
	for name := range nodes {
		names = append(names, name)
	}
	slices.Sort(names)
	var want []wantRoute
	var self netip.Addr
	owner := map[netip.Prefix]string{}
	for _, name := range names {
		n := nodes[name]
		ip, err := netip.ParseAddr(n.IP)
		if err != nil || !ip.Is4() || ip.IsUnspecified() {
			return nil, false, fmt.Errorf("routes: node %s: ip: %q is not an IPv4 address", name, n.IP)
		}
		dst, err := parseCIDR4(n.PodCIDR)
		if err != nil {
			return nil, false, fmt.Errorf("routes: node %s: podCIDR: %w", name, err)
		}
		if other, ok := owner[dst]; ok {
			return nil, false, fmt.Errorf("routes: node %s: podCIDR: %s is node %s's too", name, dst, other)
		}
		owner[dst] = name
		if name == r.cfg.NodeName {
			self = ip
			continue
		}
		want = append(want, wantRoute{table: unix.RT_TABLE_MAIN, dst: dst, gw: ip})
	}
	if !r.service.IsValid() {
		return want, false, nil
	}
	want = append(want, wantRoute{table: unix.RT_TABLE_MAIN, dst: r.service})
	if !self.IsValid() {
		return want, false, nil
	}
	want = append(want, wantRoute{table: r.cfg.LocalTable, dst: r.service, local: true, src: self})
	return want, true, nil
}

// apply lists skiff's routes and rules, deletes those not wanted, and adds
// the wanted ones that are missing.
func (r *Routes) apply(ctx context.Context, want []wantRoute, local bool) error {
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
		lo, err := h.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("sync routes: find loopback: %w", err)
		}
		var errs []error
		// The rule first, out before its table empties and in after.
		rule := r.localRule()
		rules, err := h.RuleList(netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("sync routes: list rules: %w", err)
		}
		haveRule := false
		for _, ru := range rules {
			if int(ru.Protocol) != r.cfg.Protocol {
				continue
			}
			if local && sameRule(ru, rule) {
				haveRule = true
				continue
			}
			if err := h.RuleDel(&ru); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete rule %s: %w", ru, err))
			}
		}

		filter := &netlink.Route{Protocol: netlink.RouteProtocol(r.cfg.Protocol), Table: unix.RT_TABLE_UNSPEC}
		have, err := h.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("sync routes: list: %w", err)
		}
		for _, rt := range have {
			if !slices.ContainsFunc(want, func(w wantRoute) bool { return same(rt, w, lo.Attrs().Index) }) {
				if err := h.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) {
					errs = append(errs, fmt.Errorf("delete route %s: %w", describe(rt), err))
				}
			}
		}
		for _, w := range want {
			if slices.ContainsFunc(have, func(rt netlink.Route) bool { return same(rt, w, lo.Attrs().Index) }) {
				continue
			}
			rt := netlink.Route{Dst: ipNet(w.dst), Table: w.table, Protocol: netlink.RouteProtocol(r.cfg.Protocol)}
			switch {
			case w.gw.IsValid():
				rt.Gw = net.IP(w.gw.AsSlice())
			case w.local:
				rt.LinkIndex, rt.Src, rt.Scope = lo.Attrs().Index, net.IP(w.src.AsSlice()), netlink.SCOPE_LINK
			default:
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
		if local && !haveRule {
			if err := h.RuleAdd(rule); err != nil {
				errs = append(errs, fmt.Errorf("add rule %s: %w", rule, err))
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("sync routes: %w", errors.Join(errs...))
		}
		return nil
	})
}

// localRule sends the node's own packets to the service CIDR to the local
// table.
func (r *Routes) localRule() *netlink.Rule {
	rule := netlink.NewRule()
	rule.Family = netlink.FAMILY_V4
	rule.Priority = r.cfg.LocalRulePriority
	rule.IifName = "lo"
	rule.Dst = ipNet(r.service)
	rule.Table = r.cfg.LocalTable
	rule.Protocol = uint8(r.cfg.Protocol)
	return rule
}

func sameRule(a netlink.Rule, b *netlink.Rule) bool {
	return a.Priority == b.Priority && a.IifName == b.IifName && a.Table == b.Table &&
		a.Dst != nil && b.Dst != nil && a.Dst.String() == b.Dst.String()
}

// same reports whether a kernel route is the wanted one.
func same(rt netlink.Route, w wantRoute, lo int) bool {
	if rt.Table != w.table || rt.Dst == nil || rt.Dst.String() != w.dst.String() {
		return false
	}
	switch {
	case w.gw.IsValid():
		return rt.Type == unix.RTN_UNICAST && rt.Gw != nil && rt.Gw.Equal(net.IP(w.gw.AsSlice()))
	case w.local:
		return rt.Type == unix.RTN_UNICAST && rt.LinkIndex == lo && rt.Src != nil && rt.Src.Equal(net.IP(w.src.AsSlice()))
	default:
		return rt.Type == unix.RTN_UNREACHABLE
	}
}

func describe(rt netlink.Route) string {
	switch {
	case rt.Type == unix.RTN_UNREACHABLE:
		return "unreachable " + rt.Dst.String()
	case rt.Gw != nil:
		return fmt.Sprintf("%s via %s", rt.Dst, rt.Gw)
	default:
		return fmt.Sprintf("%s dev lo src %s table %d", rt.Dst, rt.Src, rt.Table)
	}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}
}
