package apiserver

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
	"skiff.dev/skiff/control/store"
)

type netAPI struct {
	st         *store.Store
	services   skiffv1connect.ServiceServiceClient
	endpoints  skiffv1connect.EndpointsServiceClient
	nodes      skiffv1connect.NodeServiceClient
	pods       skiffv1connect.PodServiceClient
	namespaces skiffv1connect.NamespaceServiceClient
}

// newNetAPI serves an API server with the address plan n over a real
// single-server store.
func newNetAPI(t *testing.T, n Network) *netAPI {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := New(Config{Store: st, Network: n})
	if err := s.Init(ctx); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &netAPI{
		st:         st,
		services:   skiffv1connect.NewServiceServiceClient(srv.Client(), srv.URL),
		endpoints:  skiffv1connect.NewEndpointsServiceClient(srv.Client(), srv.URL),
		nodes:      skiffv1connect.NewNodeServiceClient(srv.Client(), srv.URL),
		pods:       skiffv1connect.NewPodServiceClient(srv.Client(), srv.URL),
		namespaces: skiffv1connect.NewNamespaceServiceClient(srv.Client(), srv.URL),
	}
}

// claimKeys lists the claim keys under a prefix of claimPrefix.
func (a *netAPI) claimKeys(t *testing.T, prefix string) []string {
	t.Helper()
	kvs, _, err := a.st.List(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range kvs {
		out = append(out, strings.TrimPrefix(kv.Key, prefix))
	}
	return out
}

func svc(name string, ports ...*skiffv1.ServicePort) *skiffv1.Service {
	if len(ports) == 0 {
		ports = []*skiffv1.ServicePort{{Port: 80}}
	}
	return &skiffv1.Service{
		Metadata: &skiffv1.ObjectMeta{Name: name},
		Spec:     &skiffv1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: ports},
	}
}

func (a *netAPI) createSvc(ctx context.Context, s *skiffv1.Service) (*skiffv1.Service, error) {
	res, err := a.services.Create(ctx, connect.NewRequest(s))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

func TestServiceDefaults(t *testing.T) {
	a := newNetAPI(t, Network{})
	got, err := a.createSvc(context.Background(), svc("web", &skiffv1.ServicePort{Port: 80}))
	if err != nil {
		t.Fatal(err)
	}
	sp := got.Spec
	if sp.Type != "ClusterIP" || sp.Ports[0].Protocol != "TCP" || sp.Ports[0].TargetPort != "80" {
		t.Errorf("defaults: type %q protocol %q targetPort %q, want ClusterIP TCP 80", sp.Type, sp.Ports[0].Protocol, sp.Ports[0].TargetPort)
	}
	ip, err := netip.ParseAddr(sp.ClusterIp)
	if err != nil || !DefaultServiceCIDR.Contains(ip) || ip == netip.MustParseAddr("10.96.0.1") || ip == netip.MustParseAddr("10.96.0.0") {
		t.Errorf("clusterIP %q: want an address of %s other than .0 and .1", sp.ClusterIp, DefaultServiceCIDR)
	}
	if len(sp.ClusterIps) != 1 || sp.ClusterIps[0] != sp.ClusterIp {
		t.Errorf("clusterIPs %q, want [%s]", sp.ClusterIps, sp.ClusterIp)
	}
	// The stored object says the same.
	res, err := a.services.Get(context.Background(), connect.NewRequest(&skiffv1.GetRequest{Name: "web"}))
	if err != nil || res.Msg.Spec.ClusterIp != sp.ClusterIp {
		t.Errorf("get: %v %v, want clusterIP %s", res, err, sp.ClusterIp)
	}
}

func TestServiceValidation(t *testing.T) {
	a := newNetAPI(t, Network{})
	for _, tc := range []struct {
		name string
		edit func(s *skiffv1.Service)
		want string
	}{
		{"no ports", func(s *skiffv1.Service) { s.Spec.Ports = nil }, "spec.ports: required value"},
		{"load balancer", func(s *skiffv1.Service) { s.Spec.Type = "LoadBalancer" }, `spec.type: unsupported value "LoadBalancer"`},
		{"external name", func(s *skiffv1.Service) { s.Spec.Type = "ExternalName" }, `spec.type: unsupported value "ExternalName"`},
		{"port 0", func(s *skiffv1.Service) { s.Spec.Ports[0].Port = 0 }, "spec.ports[0].port: invalid value 0"},
		{"port too big", func(s *skiffv1.Service) { s.Spec.Ports[0].Port = 70000 }, "spec.ports[0].port: invalid value 70000"},
		{"sctp", func(s *skiffv1.Service) { s.Spec.Ports[0].Protocol = "SCTP" }, `spec.ports[0].protocol: unsupported value "SCTP"`},
		{"two ports unnamed", func(s *skiffv1.Service) {
			s.Spec.Ports = append(s.Spec.Ports, &skiffv1.ServicePort{Port: 443})
		}, "spec.ports[0].name: required value"},
		{"two ports same name", func(s *skiffv1.Service) {
			s.Spec.Ports = []*skiffv1.ServicePort{{Name: "a", Port: 80}, {Name: "a", Port: 81}}
		}, `spec.ports[1].name: duplicate value "a"`},
		{"target port 0", func(s *skiffv1.Service) { s.Spec.Ports[0].TargetPort = "0" }, `spec.ports[0].targetPort: invalid value "0"`},
		{"target port name too long", func(s *skiffv1.Service) { s.Spec.Ports[0].TargetPort = "a-very-long-port-name" }, `spec.ports[0].targetPort: invalid value "a-very-long-port-name"`},
		{"target port name upper case", func(s *skiffv1.Service) { s.Spec.Ports[0].TargetPort = "Http" }, `spec.ports[0].targetPort: invalid value "Http"`},
		{"node port on cluster IP", func(s *skiffv1.Service) { s.Spec.Ports[0].NodePort = 30080 }, `spec.ports[0].nodePort: forbidden`},
		{"node port out of range", func(s *skiffv1.Service) {
			s.Spec.Type = "NodePort"
			s.Spec.Ports[0].NodePort = 8080
		}, "spec.ports[0].nodePort: invalid value 8080: provided port is not in the valid range; the range of valid ports is 30000-32767"},
		{"cluster IP not an IP", func(s *skiffv1.Service) { s.Spec.ClusterIp = "ten" }, `spec.clusterIP: invalid value "ten"`},
		{"headless", func(s *skiffv1.Service) { s.Spec.ClusterIp = "None" }, `spec.clusterIP: unsupported value "None": headless services are not supported`},
		{"cluster IP outside", func(s *skiffv1.Service) { s.Spec.ClusterIp = "10.97.0.5" }, `spec.clusterIP: invalid value "10.97.0.5": not an allocatable address of the service CIDR 10.96.0.0/16`},
		{"cluster IP reserved", func(s *skiffv1.Service) { s.Spec.ClusterIp = "10.96.0.1" }, `spec.clusterIP: invalid value "10.96.0.1": not an allocatable address`},
		{"name not DNS-1035", func(s *skiffv1.Service) { s.Metadata.Name = "1web" }, `metadata.name: invalid value "1web": a DNS-1035 label`},
		{"bad selector", func(s *skiffv1.Service) { s.Spec.Selector = map[string]string{"app": "no spaces"} }, `spec.selector[app]: invalid value "no spaces"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := svc("web")
			tc.edit(s)
			_, err := a.createSvc(context.Background(), s)
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want InvalidArgument with %q", err, tc.want)
			}
		})
	}
	if keys := a.claimKeys(t, claimPrefix); len(keys) != 0 {
		t.Errorf("refused creates left claims %q", keys)
	}
}

// TestServiceClusterIPsConcurrent creates 50 services at once: each gets
// its own cluster IP, and each IP has its claim.
func TestServiceClusterIPsConcurrent(t *testing.T) {
	a := newNetAPI(t, Network{ServiceCIDR: netip.MustParsePrefix("10.96.0.0/26")}) // 61 addresses for 50 services
	ctx := context.Background()
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		ips = map[string]string{}
	)
	for i := range 50 {
		wg.Go(func() {
			s, err := a.createSvc(ctx, svc(fmt.Sprintf("s%d", i)))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if other, dup := ips[s.Spec.ClusterIp]; dup {
				t.Errorf("%s and %s both got %s", other, s.Metadata.Name, s.Spec.ClusterIp)
			}
			ips[s.Spec.ClusterIp] = s.Metadata.Name
		})
	}
	wg.Wait()
	if got := a.claimKeys(t, clusterIPClaims); len(got) != len(ips) || len(got) != 50 {
		t.Errorf("%d claims, %d distinct IPs, want 50 each", len(got), len(ips))
	}
}

func TestServiceClusterIPExhaustedAndFreed(t *testing.T) {
	a := newNetAPI(t, Network{ServiceCIDR: netip.MustParsePrefix("10.100.0.0/29")})
	ctx := context.Background()
	var got []string
	for i := range 5 { // .2 to .6: .0, .1 and .7 are reserved
		s, err := a.createSvc(ctx, svc(fmt.Sprintf("s%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, s.Spec.ClusterIp)
	}
	_, err := a.createSvc(ctx, svc("one-too-many"))
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "no free cluster IP in 10.100.0.0/29") {
		t.Fatalf("6th service: %v, want ResourceExhausted: no free cluster IP in 10.100.0.0/29", err)
	}
	if _, err := a.services.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: "one-too-many"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("the refused service: %v, want NotFound", err)
	}
	// Deleting one frees its address for the next.
	if _, err := a.services.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: "s2"})); err != nil {
		t.Fatal(err)
	}
	if keys := a.claimKeys(t, clusterIPClaims); len(keys) != 4 || strings.Contains(strings.Join(keys, ","), got[2]) {
		t.Errorf("claims after delete: %q, want 4 without %s", keys, got[2])
	}
	s, err := a.createSvc(ctx, svc("again"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Spec.ClusterIp != got[2] {
		t.Errorf("after the delete got %s, want the freed %s", s.Spec.ClusterIp, got[2])
	}
}

func TestServiceClusterIPGiven(t *testing.T) {
	a := newNetAPI(t, Network{})
	ctx := context.Background()
	s := svc("web")
	s.Spec.ClusterIp = "10.96.7.7"
	got, err := a.createSvc(ctx, s)
	if err != nil || got.Spec.ClusterIp != "10.96.7.7" {
		t.Fatalf("create with 10.96.7.7: %v %v", got, err)
	}
	s = svc("other")
	s.Spec.ClusterIp = "10.96.7.7"
	_, err = a.createSvc(ctx, s)
	if connect.CodeOf(err) != connect.CodeAlreadyExists || !strings.Contains(err.Error(), `spec.clusterIP: invalid value "10.96.7.7": already allocated`) {
		t.Fatalf("second service on 10.96.7.7: %v, want AlreadyExists naming spec.clusterIP", err)
	}
	// A dry run of the same is refused the same way, and one that would
	// succeed claims nothing.
	req := connect.NewRequest(s)
	req.Header().Set(kinds.DryRunHeader, "All")
	if _, err := a.services.Create(ctx, req); connect.CodeOf(err) != connect.CodeAlreadyExists {
		t.Errorf("dry run on a taken IP: %v, want AlreadyExists", err)
	}
	req = connect.NewRequest(svc("dry"))
	req.Header().Set(kinds.DryRunHeader, "All")
	if _, err := a.services.Create(ctx, req); err != nil {
		t.Fatal(err)
	}
	dry := svc("dry-np")
	dry.Spec.Type = "NodePort"
	dry.Spec.Ports[0].NodePort = 30001
	req = connect.NewRequest(dry)
	req.Header().Set(kinds.DryRunHeader, "All")
	if _, err := a.services.Create(ctx, req); err != nil {
		t.Fatal(err)
	}
	if keys := a.claimKeys(t, claimPrefix); len(keys) != 1 {
		t.Errorf("claims after dry runs: %q, want only web's", keys)
	}
	// The cluster IP cannot change; an update that leaves it out keeps it.
	cur, err := a.services.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: "web"}))
	if err != nil {
		t.Fatal(err)
	}
	moved := cur.Msg
	moved.Spec.ClusterIp, moved.Spec.ClusterIps = "10.96.7.8", nil
	if _, err := a.services.Update(ctx, connect.NewRequest(moved)); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), `spec.clusterIP: field is immutable (is "10.96.7.7")`) {
		t.Errorf("update to another IP: %v, want spec.clusterIP immutable", err)
	}
	moved.Spec.ClusterIp, moved.Spec.ClusterIps = "", nil
	moved.Metadata.Labels = map[string]string{"x": "y"}
	res, err := a.services.Update(ctx, connect.NewRequest(moved))
	if err != nil || res.Msg.Spec.ClusterIp != "10.96.7.7" {
		t.Errorf("update without clusterIP: %v %v, want it kept", res, err)
	}
}

func TestServiceNodePorts(t *testing.T) {
	a := newNetAPI(t, Network{NodePorts: PortRange{Min: 30000, Max: 30002}})
	ctx := context.Background()
	np := func(name string, ports ...int32) *skiffv1.Service {
		s := svc(name)
		s.Spec.Type = "NodePort"
		s.Spec.Ports = nil
		for i, p := range ports {
			s.Spec.Ports = append(s.Spec.Ports, &skiffv1.ServicePort{Name: fmt.Sprintf("p%d", i), Port: 80 + int32(i), NodePort: p})
		}
		return s
	}
	a1, err := a.createSvc(ctx, np("a", 30001, 0))
	if err != nil {
		t.Fatal(err)
	}
	if a1.Spec.Ports[0].NodePort != 30001 || a1.Spec.Ports[1].NodePort == 0 || a1.Spec.Ports[1].NodePort == 30001 {
		t.Errorf("node ports %d %d, want 30001 and another", a1.Spec.Ports[0].NodePort, a1.Spec.Ports[1].NodePort)
	}
	if _, err := a.createSvc(ctx, np("b", 30001)); connect.CodeOf(err) != connect.CodeAlreadyExists || !strings.Contains(err.Error(), "spec.ports[0].nodePort") {
		t.Errorf("taken node port: %v, want AlreadyExists naming spec.ports[0].nodePort", err)
	}
	if _, err := a.createSvc(ctx, np("c", 0)); err != nil { // the last one
		t.Fatal(err)
	}
	if _, err := a.createSvc(ctx, np("d", 0)); connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "no free node port in 30000-30002") {
		t.Errorf("exhausted: %v", err)
	}
	if n := len(a.claimKeys(t, nodePortClaims)); n != 3 {
		t.Errorf("%d node port claims, want 3", n)
	}
	// NodePort to ClusterIP frees the ports, back to NodePort takes some.
	cur, err := a.services.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: "a"}))
	if err != nil {
		t.Fatal(err)
	}
	s := cur.Msg
	s.Spec.Type = "ClusterIP"
	for _, p := range s.Spec.Ports {
		p.NodePort = 0
	}
	if _, err := a.services.Update(ctx, connect.NewRequest(s)); err != nil {
		t.Fatal(err)
	}
	if n := len(a.claimKeys(t, nodePortClaims)); n != 1 {
		t.Errorf("%d node port claims after a became ClusterIP, want 1", n)
	}
	s.Spec.Type, s.Metadata.ResourceVersion = "NodePort", 0
	res, err := a.services.Update(ctx, connect.NewRequest(s))
	if err != nil {
		t.Fatal(err)
	}
	if res.Msg.Spec.Ports[0].NodePort == 0 || res.Msg.Spec.Ports[1].NodePort == 0 {
		t.Errorf("back to NodePort: ports %v, want both allocated", res.Msg.Spec.Ports)
	}
	// Changing an allocated node port is refused.
	s = res.Msg
	s.Spec.Ports[0].NodePort, s.Spec.Ports[1].NodePort = s.Spec.Ports[1].NodePort, s.Spec.Ports[0].NodePort
	if _, err := a.services.Update(ctx, connect.NewRequest(s)); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "spec.ports[0].nodePort: field is immutable") {
		t.Errorf("changing a node port: %v", err)
	}
	// Deleting every service frees every claim.
	for _, name := range []string{"a", "c"} {
		if _, err := a.services.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: name})); err != nil {
			t.Fatal(err)
		}
	}
	if keys := a.claimKeys(t, claimPrefix); len(keys) != 0 {
		t.Errorf("claims after deleting every service: %q", keys)
	}
}

func TestServiceNamespaceDelete(t *testing.T) {
	a := newNetAPI(t, Network{})
	ctx := context.Background()
	if _, err := a.namespaces.Create(ctx, connect.NewRequest(&skiffv1.Namespace{Metadata: &skiffv1.ObjectMeta{Name: "team"}})); err != nil {
		t.Fatal(err)
	}
	s := svc("web")
	s.Metadata.Namespace = "team"
	if _, err := a.createSvc(ctx, s); err != nil {
		t.Fatal(err)
	}
	if _, err := a.namespaces.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: "team"})); err != nil {
		t.Fatal(err)
	}
	// The namespace is marked; it goes (its finalizer removed) only once
	// its services are, which free their cluster IPs.
	res, err := a.namespaces.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: "team"}))
	if err != nil {
		t.Fatal(err)
	}
	res.Msg.Metadata.Finalizers = nil
	_, err = a.namespaces.Update(ctx, connect.NewRequest(res.Msg))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "still has service(s)") {
		t.Errorf("removing the last finalizer of a namespace with a service: %v, want FailedPrecondition", err)
	}
}

func TestEndpointsValidation(t *testing.T) {
	a := newNetAPI(t, Network{})
	good := func() *skiffv1.Endpoints {
		return &skiffv1.Endpoints{
			Metadata: &skiffv1.ObjectMeta{Name: "web"},
			Subsets: []*skiffv1.EndpointSubset{{
				Addresses: []*skiffv1.EndpointAddress{{Ip: "10.244.0.5", NodeName: "n1"}},
				Ports:     []*skiffv1.EndpointPort{{Port: 8080}},
			}},
		}
	}
	for _, tc := range []struct {
		name string
		edit func(e *skiffv1.Endpoints)
		want string
	}{
		{"bad ip", func(e *skiffv1.Endpoints) { e.Subsets[0].Addresses[0].Ip = "10.244.0.500" }, `subsets[0].addresses[0].ip: invalid value "10.244.0.500"`},
		{"loopback", func(e *skiffv1.Endpoints) { e.Subsets[0].Addresses[0].Ip = "127.0.0.1" }, `subsets[0].addresses[0].ip: invalid value "127.0.0.1": may not be`},
		{"not ready bad ip", func(e *skiffv1.Endpoints) {
			e.Subsets[0].NotReadyAddresses = []*skiffv1.EndpointAddress{{Ip: "x"}}
		}, `subsets[0].notReadyAddresses[0].ip: invalid value "x"`},
		{"port 0", func(e *skiffv1.Endpoints) { e.Subsets[0].Ports[0].Port = 0 }, "subsets[0].ports[0].port: invalid value 0"},
		{"protocol", func(e *skiffv1.Endpoints) { e.Subsets[0].Ports[0].Protocol = "SCTP" }, `subsets[0].ports[0].protocol: unsupported value "SCTP"`},
		{"no ports", func(e *skiffv1.Endpoints) { e.Subsets[0].Ports = nil }, "subsets[0].ports: required value"},
		{"bad node name", func(e *skiffv1.Endpoints) { e.Subsets[0].Addresses[0].NodeName = "N_1" }, `subsets[0].addresses[0].nodeName: invalid value "N_1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := good()
			tc.edit(e)
			_, err := a.endpoints.Create(context.Background(), connect.NewRequest(e))
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want InvalidArgument with %q", err, tc.want)
			}
		})
	}
	res, err := a.endpoints.Create(context.Background(), connect.NewRequest(good()))
	if err != nil {
		t.Fatal(err)
	}
	if p := res.Msg.Subsets[0].Ports[0].Protocol; p != "TCP" {
		t.Errorf("protocol %q, want the default TCP", p)
	}
}

func TestNodePodCIDRs(t *testing.T) {
	a := newNetAPI(t, Network{ClusterCIDR: netip.MustParsePrefix("10.250.0.0/22"), NodeCIDRMaskSize: 24}) // 4 node CIDRs
	ctx := context.Background()
	node := func(name string) *skiffv1.Node {
		return &skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: name}, Spec: &skiffv1.NodeSpec{}}
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		cidrs = map[string]string{}
	)
	for i := range 4 {
		wg.Go(func() {
			res, err := a.nodes.Create(ctx, connect.NewRequest(node(fmt.Sprintf("n%d", i))))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			c := res.Msg.Spec.PodCidr
			if p, err := netip.ParsePrefix(c); err != nil || p.Bits() != 24 || !netip.MustParsePrefix("10.250.0.0/22").Contains(p.Addr()) {
				t.Errorf("%s: podCIDR %q, want a /24 of 10.250.0.0/22", res.Msg.Metadata.Name, c)
			}
			if other, dup := cidrs[c]; dup {
				t.Errorf("%s and %s both got %s", other, res.Msg.Metadata.Name, c)
			}
			cidrs[c] = res.Msg.Metadata.Name
		})
	}
	wg.Wait()
	// The cluster CIDR is full: a fifth node registers without one, and
	// gets the one freed by a deleted node on its next status update.
	res, err := a.nodes.Create(ctx, connect.NewRequest(node("late")))
	if err != nil {
		t.Fatal(err)
	}
	if c := res.Msg.Spec.PodCidr; c != "" {
		t.Fatalf("fifth node got %q from a full cluster CIDR", c)
	}
	del, err := a.nodes.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: "n2"}))
	if err != nil {
		t.Fatal(err)
	}
	freed := del.Msg.Spec.PodCidr
	late := res.Msg
	late.Status = &skiffv1.NodeStatus{Runtimes: []string{"wasm"}}
	up, err := a.nodes.UpdateStatus(ctx, connect.NewRequest(late))
	if err != nil {
		t.Fatal(err)
	}
	if up.Msg.Spec.PodCidr != freed {
		t.Errorf("late node after a status update: podCIDR %q, want the freed %s", up.Msg.Spec.PodCidr, freed)
	}
	// The pod CIDR cannot change, and a client cannot take one in use or
	// outside the cluster CIDR.
	n := up.Msg
	n.Spec.PodCidr = "10.250.3.0/24"
	if freed == n.Spec.PodCidr {
		n.Spec.PodCidr = "10.250.2.0/24"
	}
	if _, err := a.nodes.Update(ctx, connect.NewRequest(n)); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "spec.podCIDR: field is immutable once set") {
		t.Errorf("change podCIDR: %v", err)
	}
	for _, tc := range []struct{ cidr, want string }{
		{freed, "spec.podCIDR: invalid value \"" + freed + "\": already allocated"},
		{"10.9.0.0/24", "spec.podCIDR: invalid value \"10.9.0.0/24\": must be a /24 of the cluster CIDR 10.250.0.0/22"},
		{"10.250.0.0/23", "must be a /24"},
		{"10.250.0.1/24", "spec.podCIDR: invalid value \"10.250.0.1/24\": must be a CIDR"},
	} {
		n := node("n9")
		n.Spec.PodCidr = tc.cidr
		if _, err := a.nodes.Create(ctx, connect.NewRequest(n)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("create with podCIDR %s: %v, want %q", tc.cidr, err, tc.want)
		}
	}
	// Deleting every node frees every pod CIDR.
	list, err := a.nodes.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range list.Msg.Items {
		if _, err := a.nodes.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: n.Metadata.Name})); err != nil {
			t.Fatal(err)
		}
	}
	if keys := a.claimKeys(t, podCIDRClaims); len(keys) != 0 {
		t.Errorf("claims after deleting every node: %q", keys)
	}
}

func TestPodStatusIPs(t *testing.T) {
	a := newNetAPI(t, Network{})
	ctx := context.Background()
	res, err := a.pods.Create(ctx, connect.NewRequest(pod("p")))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		st   *skiffv1.PodStatus
		want string
	}{
		{&skiffv1.PodStatus{Phase: "Running", PodIp: "10.244.0.300"}, `status.podIP: invalid value "10.244.0.300"`},
		{&skiffv1.PodStatus{Phase: "Running", HostIp: "host"}, `status.hostIP: invalid value "host"`},
		{&skiffv1.PodStatus{Phase: "Running", PodIp: "10.244.0.3", PodIps: []*skiffv1.PodIP{{Ip: "10.244.0.4"}}}, `status.podIPs[0].ip: invalid value "10.244.0.4": must be status.podIP`},
	} {
		p := res.Msg
		p.Status = tc.st
		_, err := a.pods.UpdateStatus(ctx, connect.NewRequest(p))
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("status %v: %v, want %q", tc.st, err, tc.want)
		}
	}
}

func TestNodeAddresses(t *testing.T) {
	a := newNetAPI(t, Network{})
	n := &skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: "n1"}, Status: &skiffv1.NodeStatus{Addresses: []*skiffv1.NodeAddress{
		{Type: "InternalIP", Address: "192.168.1.300"}, {Type: "ExternalIP", Address: "1.2.3.4"}, {Type: "Hostname", Address: "n1"},
	}}}
	_, err := a.nodes.Create(context.Background(), connect.NewRequest(n))
	for _, want := range []string{`status.addresses[0].address: invalid value "192.168.1.300"`, `status.addresses[1].type: unsupported value "ExternalIP"`} {
		if !strings.Contains(fmt.Sprint(err), want) {
			t.Errorf("got %v, want %q", err, want)
		}
	}
	if strings.Contains(fmt.Sprint(err), "addresses[2]") {
		t.Errorf("a Hostname address refused: %v", err)
	}
}

func TestNetworkValidate(t *testing.T) {
	for _, tc := range []struct {
		n    Network
		want string
	}{
		{Network{}, ""},
		{Network{ServiceCIDR: netip.MustParsePrefix("10.96.0.0/30")}, "service-cidr 10.96.0.0/30: too small"},
		{Network{ServiceCIDR: netip.MustParsePrefix("10.244.0.0/20")}, "overlaps cluster-cidr"},
		{Network{NodeCIDRMaskSize: 16}, "node-cidr-mask-size 16: must be longer than cluster-cidr's /16"},
		{Network{NodeCIDRMaskSize: 31}, "node-cidr-mask-size 31"},
		{Network{NodePorts: PortRange{Min: 40000, Max: 30000}}, "service-node-port-range 40000-30000"},
	} {
		err := tc.n.Validate()
		if tc.want == "" && err != nil || tc.want != "" && !strings.Contains(fmt.Sprint(err), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.n, err, tc.want)
		}
	}
	if _, err := ParsePortRange("30000"); err == nil {
		t.Error("ParsePortRange(30000): no error")
	}
	if r, err := ParsePortRange("30000-32767"); err != nil || r != DefaultNodePorts {
		t.Errorf("ParsePortRange: %v %v", r, err)
	}
}

// TestServiceFailedCreateClaimsNothing: a create refused by the store (the
// name is taken, the namespace is missing) leaves no claim behind.
func TestServiceFailedCreateClaimsNothing(t *testing.T) {
	a := newNetAPI(t, Network{})
	ctx := context.Background()
	if _, err := a.createSvc(ctx, svc("web")); err != nil {
		t.Fatal(err)
	}
	s := svc("web")
	s.Spec.Type = "NodePort"
	if _, err := a.createSvc(ctx, s); connect.CodeOf(err) != connect.CodeAlreadyExists || !strings.Contains(err.Error(), `service "default/web" already exists`) {
		t.Errorf("second web: %v, want AlreadyExists", err)
	}
	s = svc("web")
	s.Metadata.Namespace = "nowhere"
	if _, err := a.createSvc(ctx, s); connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), `namespace "nowhere" not found`) {
		t.Errorf("web in a missing namespace: %v, want NotFound", err)
	}
	if keys := a.claimKeys(t, claimPrefix); len(keys) != 1 {
		t.Errorf("claims: %q, want web's cluster IP alone", keys)
	}
}

func TestNetworkAddresses(t *testing.T) {
	n := Network{}.withDefaults()
	for i, want := range map[uint64]string{0: "10.244.0.0/24", 1: "10.244.1.0/24", 255: "10.244.255.0/24"} {
		if got := n.nodeCIDR(i).String(); got != want {
			t.Errorf("node CIDR %d: %s, want %s", i, got, want)
		}
	}
	v6 := Network{ClusterCIDR: netip.MustParsePrefix("fd00:10:244::/56"), NodeCIDRMaskSize: 64, ServiceCIDR: netip.MustParsePrefix("fd00:10:96::/112")}.withDefaults()
	if err := v6.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := v6.nodeCIDR(3).String(); got != "fd00:10:244:3::/64" {
		t.Errorf("IPv6 node CIDR 3: %s", got)
	}
	a, ok := v6.pickServiceIP(map[string]bool{})
	if !ok || !v6.ServiceCIDR.Contains(a) || !v6.serviceIPAllowed(a) {
		t.Errorf("IPv6 cluster IP %s (%v): not an allocatable address of %s", a, ok, v6.ServiceCIDR)
	}
	tiny := Network{ServiceCIDR: netip.MustParsePrefix("10.100.0.0/29")}.withDefaults()
	for s, want := range map[string]bool{"10.100.0.0": false, "10.100.0.1": false, "10.100.0.2": true, "10.100.0.6": true, "10.100.0.7": false, "10.100.0.8": false} {
		if got := tiny.serviceIPAllowed(netip.MustParseAddr(s)); got != want {
			t.Errorf("%s allowed in %s: %v, want %v", s, tiny.ServiceCIDR, got, want)
		}
	}
}

// TestServiceClusterIPRaceForTheLast: five creates at once for the five
// addresses of a /29 must collide, and each that loses picks another: all
// five get one, each its own.
func TestServiceClusterIPRaceForTheLast(t *testing.T) {
	for round := range 3 {
		a := newNetAPI(t, Network{ServiceCIDR: netip.MustParsePrefix("10.100.0.0/29")})
		ctx := context.Background()
		var (
			wg  sync.WaitGroup
			mu  sync.Mutex
			ips = map[string]bool{}
		)
		for i := range 5 {
			wg.Go(func() {
				s, err := a.createSvc(ctx, svc(fmt.Sprintf("s%d", i)))
				if err != nil {
					t.Errorf("round %d: %v", round, err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if ips[s.Spec.ClusterIp] {
					t.Errorf("round %d: %s given twice", round, s.Spec.ClusterIp)
				}
				ips[s.Spec.ClusterIp] = true
			})
		}
		wg.Wait()
		if len(ips) != 5 {
			t.Errorf("round %d: %d distinct IPs, want 5", round, len(ips))
		}
	}
}
