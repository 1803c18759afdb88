package proxy

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

// RunConfig is what Run needs: API clients of the kinds the node's network
// follows, and the proxier and routes it keeps in step with them.
type RunConfig struct {
	Services, Endpoints, Nodes kinds.Client
	Proxier                    *Proxier
	Routes                     *Routes
	// MinSyncPeriod is the least time between two syncs, so that a burst
	// of changes (a rollout) costs one sync, not one each (default 100ms).
	MinSyncPeriod time.Duration
	// ResyncPeriod is how often everything is listed again, and what
	// differs in the kernel written again, even when no watch reported a
	// change (default 5 minutes): the
	// safety net under the watches, as kube-proxy's syncPeriod.
	ResyncPeriod time.Duration
	Logger       *slog.Logger
}

// Run follows services, endpoints and nodes through the API, and on every
// change lists them again and syncs the proxier (services) and the routes
// (nodes), until ctx ends. It then leaves the rules in place, as
// kube-proxy does: a restarted node serves on while it starts.
func Run(ctx context.Context, cfg RunConfig) {
	if cfg.MinSyncPeriod <= 0 {
		cfg.MinSyncPeriod = 100 * time.Millisecond
	}
	if cfg.ResyncPeriod <= 0 {
		cfg.ResyncPeriod = 5 * time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	svcKick, nodeKick := make(chan struct{}, 1), make(chan struct{}, 1)
	kicker := func(ch chan struct{}) func() {
		return func() {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	go kinds.Follow(ctx, cfg.Services, &skiffv1.WatchRequest{}, log, kicker(svcKick))
	go kinds.Follow(ctx, cfg.Endpoints, &skiffv1.WatchRequest{}, log, kicker(svcKick))
	if cfg.Routes != nil {
		go kinds.Follow(ctx, cfg.Nodes, &skiffv1.WatchRequest{}, log, kicker(nodeKick))
		kicker(nodeKick)()
	}
	kicker(svcKick)()
	resync := time.NewTicker(cfg.ResyncPeriod)
	defer resync.Stop()
	// retry is armed after a failed sync: one pending retry at a time.
	var retry <-chan time.Time
	for {
		var services, nodes bool
		select {
		case <-ctx.Done():
			return
		case <-svcKick:
			services = true
		case <-nodeKick:
			nodes = true
		case <-retry:
			retry = nil
			services, nodes = true, cfg.Routes != nil
		case <-resync.C:
			cfg.Proxier.Resync()
			services, nodes = true, cfg.Routes != nil
		}
		start := time.Now()
		failed := false
		if services {
			if err := syncServices(ctx, cfg, log); err != nil && ctx.Err() == nil {
				log.Warn("service proxy sync failed; retrying", "err", err)
				failed = true
			}
		}
		if nodes {
			if err := syncRoutes(ctx, cfg); err != nil && ctx.Err() == nil {
				log.Warn("node routes sync failed; retrying", "err", err)
				failed = true
			}
		}
		if failed && retry == nil {
			retry = time.After(time.Second)
		}
		// Changes that come meanwhile wait in the kick channels.
		select {
		case <-ctx.Done():
			return
		case <-time.After(cfg.MinSyncPeriod - time.Since(start)):
		}
	}
}

func syncServices(ctx context.Context, cfg RunConfig, log *slog.Logger) error {
	svcs, _, err := cfg.Services.List(ctx, &skiffv1.ListRequest{})
	if err != nil {
		return err
	}
	eps, _, err := cfg.Endpoints.List(ctx, &skiffv1.ListRequest{})
	if err != nil {
		return err
	}
	byName := make(map[key]*skiffv1.Endpoints, len(eps))
	for _, o := range eps {
		e := o.(*skiffv1.Endpoints)
		byName[key{e.GetMetadata().GetNamespace(), e.GetMetadata().GetName()}] = e
	}
	var model []Service
	for _, o := range svcs {
		svc := o.(*skiffv1.Service)
		m, ok := FromAPI(svc, byName[key{svc.GetMetadata().GetNamespace(), svc.GetMetadata().GetName()}])
		if !ok {
			continue
		}
		if err := m.validate(); err != nil {
			// One service the proxy cannot serve must not hold back
			// the others.
			log.Warn("service left out of the proxy", "err", err)
			continue
		}
		model = append(model, m)
	}
	if err := cfg.Proxier.Replace(model); err != nil {
		return err
	}
	return cfg.Proxier.Sync(ctx)
}

func syncRoutes(ctx context.Context, cfg RunConfig) error {
	items, _, err := cfg.Nodes.List(ctx, &skiffv1.ListRequest{})
	if err != nil {
		return err
	}
	want := map[string]NodeRoute{}
	for _, o := range items {
		n := o.(*skiffv1.Node)
		if r, ok := nodeRoute(n); ok {
			want[n.GetMetadata().GetName()] = r
		}
	}
	return cfg.Routes.Sync(ctx, want)
}

// nodeRoute is the route to node n's pods: its pod CIDR via its
// InternalIP; false while it has either missing.
func nodeRoute(n *skiffv1.Node) (NodeRoute, bool) {
	var ip string
	for _, a := range n.GetStatus().GetAddresses() {
		if a.GetType() == "InternalIP" {
			ip = a.GetAddress()
			break
		}
	}
	if ip == "" || n.GetSpec().GetPodCidr() == "" {
		return NodeRoute{}, false
	}
	return NodeRoute{IP: ip, PodCIDR: n.GetSpec().GetPodCidr()}, true
}

// FromAPI converts a Service and its Endpoints (nil when it has none yet)
// to the proxy's model: each service port gets the ready addresses of the
// endpoint subsets that carry a port of its name and protocol, at that
// port's number. A service without a cluster IP (headless, or not yet
// allocated) is not proxied: false.
func FromAPI(svc *skiffv1.Service, eps *skiffv1.Endpoints) (Service, bool) {
	ip := svc.GetSpec().GetClusterIp()
	if addr, err := netip.ParseAddr(ip); err != nil || !addr.Is4() {
		return Service{}, false
	}
	out := Service{Namespace: svc.GetMetadata().GetNamespace(), Name: svc.GetMetadata().GetName(), ClusterIP: ip}
	for _, sp := range svc.GetSpec().GetPorts() {
		proto := Protocol(sp.GetProtocol())
		if proto == "" {
			proto = TCP
		}
		p := ServicePort{Name: sp.GetName(), Protocol: proto, Port: sp.GetPort(), NodePort: sp.GetNodePort()}
		for _, ss := range eps.GetSubsets() {
			for _, ep := range ss.GetPorts() {
				epProto := Protocol(ep.GetProtocol())
				if epProto == "" {
					epProto = TCP
				}
				if ep.GetName() != sp.GetName() || epProto != proto {
					continue
				}
				for _, a := range ss.GetAddresses() {
					p.Endpoints = append(p.Endpoints, Endpoint{IP: a.GetIp(), Port: ep.GetPort()})
				}
			}
		}
		out.Ports = append(out.Ports, p)
	}
	return out, true
}
