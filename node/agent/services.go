package agent

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

// serviceLinks keeps the cluster's services, so that each container starts
// with the service environment variables of its namespace, as the kubelet
// gives them (REDIS_SERVICE_HOST, REDIS_PORT_6379_TCP_ADDR, ...). It lists
// the services again whenever a watch reports a change.
type serviceLinks struct {
	client kinds.Client
	log    *slog.Logger

	mu     sync.Mutex
	byNS   map[string][]*skiffv1.Service // guarded by mu
	synced chan struct{}                 // closed after the first list, done or failed
	once   sync.Once
}

// serviceSyncWait bounds how long a container's start waits for the first
// list of services; past it, the container starts without their variables
// (and the agent says so).
const serviceSyncWait = 10 * time.Second

func newServiceLinks(c kinds.Client, log *slog.Logger) *serviceLinks {
	return &serviceLinks{client: c, log: log, byNS: map[string][]*skiffv1.Service{}, synced: make(chan struct{})}
}

// run keeps the services current until ctx ends.
func (s *serviceLinks) run(ctx context.Context) {
	kick := make(chan struct{}, 1)
	notify := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	go kinds.Follow(ctx, s.client, &skiffv1.WatchRequest{}, s.log, notify)
	notify()
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		}
		err := s.list(ctx)
		s.once.Do(func() { close(s.synced) })
		if err != nil && ctx.Err() == nil {
			s.log.Warn("list services for containers' environment", "err", err)
			time.AfterFunc(time.Second, notify)
		}
	}
}

func (s *serviceLinks) list(ctx context.Context) error {
	items, _, err := s.client.List(ctx, &skiffv1.ListRequest{})
	if err != nil {
		return err
	}
	byNS := map[string][]*skiffv1.Service{}
	for _, o := range items {
		svc := o.(*skiffv1.Service)
		ns := svc.GetMetadata().GetNamespace()
		byNS[ns] = append(byNS[ns], svc)
	}
	s.mu.Lock()
	s.byNS = byNS
	s.mu.Unlock()
	return nil
}

// env returns the service variables of namespace ns, waiting for the first
// list of services (done or failed) for at most serviceSyncWait. A nil serviceLinks (an
// agent without a service client) has none.
func (s *serviceLinks) env(ctx context.Context, ns string) []*runtimeapi.KeyValue {
	if s == nil {
		return nil
	}
	select {
	case <-s.synced:
	case <-ctx.Done():
		return nil
	case <-time.After(serviceSyncWait):
		s.log.Warn("services not listed yet: the container starts without their environment variables", "namespace", ns)
		return nil
	}
	s.mu.Lock()
	svcs := s.byNS[ns]
	s.mu.Unlock()
	return serviceEnv(svcs)
}

// serviceEnv is the kubelet's service environment for these services: for
// each one with a cluster IP, NAME_SERVICE_HOST and NAME_SERVICE_PORT (its
// first port), NAME_SERVICE_PORT_PORTNAME per named port, and the Docker
// link variables NAME_PORT, NAME_PORT_<port>_<PROTO>{,_PROTO,_PORT,_ADDR}.
// NAME is the service's name upper-cased with '-' as '_'. Sorted by name.
func serviceEnv(svcs []*skiffv1.Service) []*runtimeapi.KeyValue {
	var out []*runtimeapi.KeyValue
	add := func(k, v string) { out = append(out, &runtimeapi.KeyValue{Key: k, Value: []byte(v)}) }
	sorted := slices.Clone(svcs)
	slices.SortFunc(sorted, func(a, b *skiffv1.Service) int {
		return strings.Compare(a.GetMetadata().GetName(), b.GetMetadata().GetName())
	})
	for _, svc := range sorted {
		ip := svc.GetSpec().GetClusterIp()
		ports := svc.GetSpec().GetPorts()
		if ip == "" || ip == "None" || len(ports) == 0 {
			continue
		}
		name := envName(svc.GetMetadata().GetName())
		add(name+"_SERVICE_HOST", ip)
		add(name+"_SERVICE_PORT", strconv.Itoa(int(ports[0].GetPort())))
		for _, p := range ports {
			if p.GetName() != "" {
				add(name+"_SERVICE_PORT_"+envName(p.GetName()), strconv.Itoa(int(p.GetPort())))
			}
		}
		proto := strings.ToLower(orTCP(ports[0].GetProtocol()))
		add(name+"_PORT", fmt.Sprintf("%s://%s:%d", proto, ip, ports[0].GetPort()))
		for _, p := range ports {
			proto := orTCP(p.GetProtocol())
			prefix := fmt.Sprintf("%s_PORT_%d_%s", name, p.GetPort(), proto)
			add(prefix, fmt.Sprintf("%s://%s:%d", strings.ToLower(proto), ip, p.GetPort()))
			add(prefix+"_PROTO", strings.ToLower(proto))
			add(prefix+"_PORT", strconv.Itoa(int(p.GetPort())))
			add(prefix+"_ADDR", ip)
		}
	}
	return out
}

func envName(s string) string { return strings.ToUpper(strings.ReplaceAll(s, "-", "_")) }

func orTCP(proto string) string {
	if proto == "" {
		return "TCP"
	}
	return strings.ToUpper(proto)
}

// withServiceEnv puts the service variables before the container's own, so
// that a variable the pod sets wins, as in Kubernetes.
func withServiceEnv(services, own []*runtimeapi.KeyValue) []*runtimeapi.KeyValue {
	if len(services) == 0 {
		return own
	}
	mine := map[string]bool{}
	for _, kv := range own {
		mine[kv.Key] = true
	}
	out := make([]*runtimeapi.KeyValue, 0, len(services)+len(own))
	for _, kv := range services {
		if !mine[kv.Key] {
			out = append(out, kv)
		}
	}
	return append(out, own...)
}
