// Package proxy is the node's service proxy: it turns services and their
// endpoints into iptables rules in the node's network namespace, the way
// kube-proxy's iptables mode does, and installs the node's routes to the
// other nodes' pod CIDRs (Routes).
//
// It owns the chains named SKIFF-* in the nat and filter tables and one
// jump to them from each of PREROUTING, OUTPUT, POSTROUTING (nat) and
// INPUT, FORWARD, OUTPUT (filter); it touches nothing else, and Cleanup
// removes all of it. It does not watch the API: its caller hands it
// Services (this package's model) and calls Sync.
//
// A cluster IP port is DNATed to one of its endpoints, chosen at random
// with equal odds; a node port is the same on every local address of the
// node, and is masqueraded; a port without endpoints is rejected
// ("connection refused"). Pods on one bridge that reach a service whose
// chosen endpoint is on the same bridge rely on br_netfilter: the proxy
// sets net.bridge.bridge-nf-call-iptables=1 in its namespace, so that the
// endpoint's reply, bridged straight back to the client, is un-DNATed.
// (Masquerading all service traffic would work without it but would hide
// every client's address.) An endpoint reaching itself through its service
// (hairpin) is masqueraded; its bridge port must be in hairpin mode (CNI's
// bridge plugin: hairpinMode) for the packet to go back out the port it
// came in on.
//
// Routes puts an unreachable route on the service CIDR, and a policy rule
// that lets the node's own processes still reach cluster IPs (see
// RoutesConfig); Config.ServiceCIDR refuses what no service matches.
package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-iptables/iptables"
)

// Config configures a Proxier.
type Config struct {
	// InNetNS runs fn on a thread inside the network namespace to program
	// (netns.Do bound to a path does). Nil: the process's own namespace
	// (the node's), not the calling thread's: some calls run on goroutines
	// of their own, so a caller inside another namespace must set it.
	InNetNS func(fn func() error) error
	// ClusterCIDR, when set, is the pods' CIDR: traffic to a cluster IP
	// from any other source is masqueraded, so that replies come back
	// through this node.
	ClusterCIDR string
	// ServiceCIDR, when set, is the cluster IPs' range: a connection to
	// an address in it that no service port matches is refused. With
	// Routes' unreachable route this is what refuses the node's own
	// connections to such addresses.
	ServiceCIDR string
	// MasqueradeMark is the packet mark bit that asks for masquerading
	// (default 0x4000).
	MasqueradeMark uint32
	// ExecTimeout bounds every command the proxy runs (default 10s).
	ExecTimeout time.Duration
	Logger      *slog.Logger
}

// Proxier holds the desired services and syncs them to iptables. Its
// methods are safe for concurrent use; syncs are serialised.
type Proxier struct {
	cfg   Config
	rules ruleConfig
	log   *slog.Logger

	iptMu sync.Mutex
	ipt   *iptables.IPTables // created on first use, inside the namespace

	mu      sync.Mutex
	backend string // of iptables-restore: "nf_tables" or "legacy"; "" until asked
	desired map[key]Service
	// applied is what the kernel holds per service, valid unless full is
	// set; shared holds the last written content of the shared chains.
	applied         map[key]*rendered
	shared          map[string][]string // table/name -> rules
	full            bool
	bridgeNFChanged bool
}

// New returns a Proxier with no services. Nothing touches the kernel
// before the first Sync.
func New(cfg Config) (*Proxier, error) {
	if cfg.MasqueradeMark == 0 {
		cfg.MasqueradeMark = 0x4000
	}
	if cfg.MasqueradeMark&(cfg.MasqueradeMark-1) != 0 {
		return nil, fmt.Errorf("new proxier: masqueradeMark 0x%x: must be a single bit", cfg.MasqueradeMark)
	}
	if cfg.ClusterCIDR != "" {
		if _, err := parseCIDR4(cfg.ClusterCIDR); err != nil {
			return nil, fmt.Errorf("new proxier: clusterCIDR: %w", err)
		}
	}
	if cfg.ServiceCIDR != "" {
		if _, err := parseCIDR4(cfg.ServiceCIDR); err != nil {
			return nil, fmt.Errorf("new proxier: serviceCIDR: %w", err)
		}
	}
	if cfg.ExecTimeout <= 0 {
		cfg.ExecTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Proxier{
		cfg:     cfg,
		rules:   ruleConfig{clusterCIDR: cfg.ClusterCIDR, serviceCIDR: cfg.ServiceCIDR, masqMark: cfg.MasqueradeMark},
		log:     cfg.Logger,
		desired: map[key]Service{},
		applied: map[key]*rendered{},
		shared:  map[string][]string{},
		full:    true,
	}, nil
}

// SetService adds or replaces a service in the desired state. An invalid
// service is refused, with the field and the reason, and changes nothing.
// The kernel changes at the next Sync.
func (p *Proxier) SetService(svc Service) error {
	if err := svc.validate(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.desired[svc.key()] = svc.clone()
	return nil
}

// DeleteService removes a service from the desired state; an unknown one
// is not an error.
func (p *Proxier) DeleteService(namespace, name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.desired, key{namespace, name})
}

// Replace makes svcs the whole desired state. If any is invalid, or two
// share a namespace and name, nothing changes.
func (p *Proxier) Replace(svcs []Service) error {
	next := make(map[key]Service, len(svcs))
	for i := range svcs {
		if err := svcs[i].validate(); err != nil {
			return err
		}
		k := svcs[i].key()
		if _, dup := next[k]; dup {
			return fmt.Errorf("service %s/%s: listed twice", k.namespace, k.name)
		}
		next[k] = svcs[i].clone()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.desired = next
	return nil
}

// Resync makes the next Sync a full one: every chain that the kernel does
// not hold exactly as wanted rewritten, and any SKIFF-* chain found in the
// kernel but not wanted deleted.
func (p *Proxier) Resync() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.full = true
}

// Sync brings the kernel to the desired state. The first sync, the one
// after Resync and the one after a failed sync are full: they list the
// kernel's chains first (on iptables-nft with their rules) and write
// every chain that differs from the rendering, and delete the ones not
// wanted. The others rewrite only the chains of services that changed,
// the shared chains whose content changed, and delete the chains of
// removed services and endpoints. Either writes in one iptables-restore.
func (p *Proxier) Sync(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	full := p.full
	p.full = true // until this sync succeeds
	start := time.Now()

	var existing *kernelState // what the kernel holds, listed before a full sync
	if full {
		changed, err := p.ensureBridgeNetfilter()
		if err != nil {
			p.log.Warn("pods will not reach services whose endpoint is on their own bridge", "err", err)
		}
		p.bridgeNFChanged = p.bridgeNFChanged || changed
		if existing, err = p.existingChains(ctx); err != nil {
			return fmt.Errorf("sync services: %w", err)
		}
	}

	pl := p.plan(full, existing)
	in := pl.in
	if existing != nil && existing.rules != nil {
		in.listed = existing.count()
	}
	if !in.empty() {
		if err := p.restoreRun(ctx, in); err != nil {
			return fmt.Errorf("sync services: %w", err)
		}
	}
	if full && !existing.jumps {
		if err := p.ensureJumps(ctx); err != nil {
			return fmt.Errorf("sync services: %w", err)
		}
	}
	p.applied, p.shared, p.full = pl.next, pl.shared, false
	// The rules are in; a flow that outlives its endpoint only delays a
	// client until its entry times out, so this is reported, not failed.
	if err := p.forgetFlows(pl.staleUDP); err != nil {
		p.log.Warn("UDP clients of removed endpoints may reach them until their flows time out", "err", err)
	}
	chains, rules := in.counts()
	p.log.Debug("synced services", "full", full, "services", len(pl.next), "changed", pl.changed,
		"chains", chains, "rules", rules, "took", time.Since(start))
	return nil
}

// existingChains lists what the kernel holds before a full sync: on
// iptables-nft the SKIFF-* chains with their rules, so that only the chains
// that differ are written; on iptables-legacy, whose restore rewrites a
// table whole anyway, only their names, to delete the stale ones.
func (p *Proxier) existingChains(ctx context.Context) (*kernelState, error) {
	nft, err := p.nftBackend(ctx)
	if err != nil {
		return nil, err
	}
	if nft {
		return p.listChains(ctx)
	}
	names, err := p.ownChains(ctx)
	if err != nil {
		return nil, err
	}
	return &kernelState{names: names}, nil
}

// syncPlan is what one sync writes, and the state it leaves.
type syncPlan struct {
	in       *restore
	next     map[key]*rendered   // the applied state after the restore
	shared   map[string][]string // the shared chains' content after it
	wanted   map[string]bool     // table/name of every chain kept
	changed  int                 // services rendered anew
	staleUDP []staleFlow         // UDP endpoints gone, whose flows to forget
}

// plan works out the restore that takes the kernel from the applied state
// to the desired one. A full one renders everything and writes every chain
// that existing does not show the kernel holding exactly (all of them when
// existing is nil or has no rules), and deletes the SKIFF-* chains in
// existing that are not wanted; an incremental one writes the chains of
// changed services and the shared chains whose content changed. It does no
// I/O.
func (p *Proxier) plan(full bool, existing *kernelState) *syncPlan {
	keys := make([]key, 0, len(p.desired))
	for k := range p.desired {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b key) int {
		if a.namespace != b.namespace {
			return strings.Compare(a.namespace, b.namespace)
		}
		return strings.Compare(a.name, b.name)
	})

	in := newRestore()
	write := func(c chain) {
		if !full || !existing.same(c) {
			in.add(c)
		}
	}
	next := make(map[key]*rendered, len(keys))
	wanted := map[string]bool{} // table/name of every chain this sync keeps
	order := make([]*rendered, 0, len(keys))
	changed := 0
	var stale []staleFlow
	for _, k := range keys {
		svc := p.desired[k]
		old := p.applied[k]
		r := old
		if full || old == nil || !old.svc.equal(&svc) {
			if old != nil {
				stale = append(stale, staleUDPFlows(&old.svc, &svc)...)
			}
			r = render(&svc, p.rules)
			changed++
			for _, c := range r.chains {
				write(c)
			}
			if old != nil && !full {
				now := map[string]bool{}
				for _, c := range r.chains {
					now[c.name] = true
				}
				for _, c := range old.chains {
					if !now[c.name] {
						in.del(c.table, c.name)
					}
				}
			}
		}
		next[k] = r
		order = append(order, r)
		for _, c := range r.chains {
			wanted[c.table+"/"+c.name] = true
		}
	}
	for k, old := range p.applied {
		if _, ok := next[k]; ok {
			continue
		}
		stale = append(stale, staleUDPFlows(&old.svc, nil)...)
		if !full {
			for _, c := range old.chains {
				in.del(c.table, c.name)
			}
		}
	}

	shared := map[string][]string{}
	for _, c := range sharedChains(order, p.rules) {
		id := c.table + "/" + c.name
		shared[id] = c.rules
		wanted[id] = true
		if full || !slices.Equal(p.shared[id], c.rules) {
			write(c)
		}
	}
	if full {
		for _, c := range staticChains(p.rules) {
			write(c)
			wanted[c.table+"/"+c.name] = true
		}
		var names map[string][]string
		if existing != nil {
			names = existing.names
		}
		for _, table := range []string{tableNAT, tableFilter} {
			for _, name := range names[table] {
				if !wanted[table+"/"+name] {
					in.del(table, name)
				}
			}
		}
	}

	return &syncPlan{in: in, next: next, shared: shared, wanted: wanted, changed: changed, staleUDP: stale}
}

// Cleanup removes everything the proxy put in the kernel: the jumps from
// the built-in chains and every SKIFF-* chain, found in the kernel (so a
// previous run's leftovers go too), and puts back bridge-nf-call-iptables
// if this Proxier changed it. The desired state is kept; the next Sync is
// a full one. Cleanup is idempotent.
func (p *Proxier) Cleanup(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.full = true
	if err := p.removeJumps(ctx); err != nil {
		return fmt.Errorf("clean up services: %w", err)
	}
	existing, err := p.ownChains(ctx)
	if err != nil {
		return fmt.Errorf("clean up services: %w", err)
	}
	in := newRestore()
	for table, names := range existing {
		for _, name := range names {
			in.del(table, name)
		}
	}
	if !in.empty() {
		if err := p.restoreRun(ctx, in); err != nil {
			return fmt.Errorf("clean up services: %w", err)
		}
	}
	p.applied, p.shared = map[key]*rendered{}, map[string][]string{}
	if p.bridgeNFChanged {
		if err := p.resetBridgeNetfilter(); err != nil {
			return fmt.Errorf("clean up services: %w", err)
		}
		p.bridgeNFChanged = false
	}
	return nil
}
