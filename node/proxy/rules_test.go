package proxy

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// golden compares got with testdata/name.golden.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		must(t, "mkdir testdata", os.MkdirAll("testdata", 0o755))
		must(t, "write "+path, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	must(t, "read golden file (run with -update to make it)", err)
	if got != string(want) {
		t.Errorf("restore input differs from %s:\n%s\n(rerun with -update after checking the change)", path, diffLines(string(want), got))
	}
}

// diffLines lists the lines only in want (-) or only in got (+).
func diffLines(want, got string) string {
	count := func(s string) map[string]int {
		m := map[string]int{}
		for l := range strings.Lines(s) {
			m[l]++
		}
		return m
	}
	w, g := count(want), count(got)
	var b strings.Builder
	for l := range strings.Lines(want) {
		if g[l] == 0 {
			b.WriteString("- " + l)
		}
	}
	for l := range strings.Lines(got) {
		if w[l] == 0 {
			b.WriteString("+ " + l)
		}
	}
	if b.Len() == 0 {
		return "(same lines, different order)"
	}
	return b.String()
}

var (
	web = Service{Namespace: "default", Name: "web", ClusterIP: "10.96.0.10", Ports: []ServicePort{
		{Name: "http", Protocol: TCP, Port: 80, Endpoints: []Endpoint{{"10.244.1.2", 8080}, {"10.244.2.3", 8080}, {"10.244.2.4", 8080}}},
	}}
	// dns has two ports named alike in two protocols, whose target port
	// resolved differently on its two endpoints.
	dns = Service{Namespace: "kube-system", Name: "dns", ClusterIP: "10.96.0.53", Ports: []ServicePort{
		{Name: "dns", Protocol: UDP, Port: 53, NodePort: 30053, Endpoints: []Endpoint{{"10.244.1.5", 53}, {"10.244.2.5", 5353}}},
		{Name: "dns-tcp", Protocol: TCP, Port: 53, Endpoints: []Endpoint{{"10.244.1.5", 53}, {"10.244.2.5", 5353}}},
	}}
	// idle has no endpoints: its ports are rejected.
	idle = Service{Namespace: "default", Name: "idle", ClusterIP: "10.96.0.11", Ports: []ServicePort{
		{Protocol: TCP, Port: 443, NodePort: 30443},
	}}
)

// TestSyncPlans walks one proxier through a sequence of desired states and
// compares each sync's iptables-restore input with a golden file.
func TestSyncPlans(t *testing.T) {
	p, err := New(Config{ClusterCIDR: "10.244.0.0/16", ServiceCIDR: "10.96.0.0/16"})
	must(t, "new proxier", err)
	full := true
	steps := []struct {
		name   string
		change func()
		full   bool
		exist  func() *kernelState // what the kernel holds before a full sync
	}{
		{"full", func() {
			must(t, "replace", p.Replace([]Service{web, dns, idle}))
		}, true, func() *kernelState {
			return &kernelState{names: map[string][]string{tableNAT: {"SKIFF-SVC-LEFTOVER", serviceChainName("default", "web", "http", TCP)}}}
		}},
		{"endpoint-changed", func() {
			svc := web.clone()
			svc.Ports[0].Endpoints[1].Port = 9090
			must(t, "set", p.SetService(svc))
		}, false, none},
		{"nothing-changed", func() {}, false, none},
		{"service-removed", func() { p.DeleteService("kube-system", "dns") }, false, none},
		{"endpoints-gone", func() {
			svc := web.clone()
			svc.Ports[0].Endpoints = nil
			must(t, "set", p.SetService(svc))
		}, false, none},
		{"resync", func() {}, true, none},
		// A full sync over a kernel that holds the rules but for one
		// missing chain, one whose rules differ and one left over: it
		// writes the two and deletes the third, nothing else.
		{"resync-over-rules", func() { must(t, "set", p.SetService(dns)) }, true, func() *kernelState {
			k := holding(p)
			drop := serviceChainName("kube-system", "dns", "dns", UDP)
			delete(k.rules, tableNAT+"/"+drop)
			k.names[tableNAT] = slices.DeleteFunc(k.names[tableNAT], func(n string) bool { return n == drop })
			id := tableFilter + "/" + servicesChain
			k.rules[id] = k.rules[id][1:]
			k.names[tableNAT] = append(k.names[tableNAT], "SKIFF-SEP-LEFTOVER")
			k.rules[tableNAT+"/SKIFF-SEP-LEFTOVER"] = []string{"-A SKIFF-SEP-LEFTOVER -j RETURN"}
			return k
		}},
		{"resync-over-same-rules", func() {}, true, func() *kernelState { return holding(p) }},
	}
	for _, st := range steps {
		st.change()
		full = st.full
		pl := p.plan(full, st.exist())
		got := string(pl.in.bytes())
		golden(t, "sync-"+st.name, got)
		p.applied, p.shared = pl.next, pl.shared // as if the restore succeeded
	}
}

// none is no knowledge of the kernel.
func none() *kernelState { return nil }

// holding returns a kernel that holds exactly the chains a full sync of
// p's desired state writes.
func holding(p *Proxier) *kernelState {
	k := &kernelState{names: map[string][]string{}, rules: map[string][]string{}, jumps: true}
	for table, cs := range p.plan(true, nil).in.write {
		for _, c := range cs {
			k.names[table] = append(k.names[table], c.name)
			k.rules[table+"/"+c.name] = slices.Clone(c.rules)
		}
	}
	return k
}

func TestChainNames(t *testing.T) {
	a := serviceChainName("default", "web", "http", TCP)
	if a != serviceChainName("default", "web", "http", TCP) {
		t.Error("chain name not stable")
	}
	if len(a) > 28 || !strings.HasPrefix(a, "SKIFF-SVC-") {
		t.Errorf("chain name %q: want SKIFF-SVC- and at most 28 characters", a)
	}
	if a != "SKIFF-SVC-CPPOUM3HC4PKIZHX" {
		t.Errorf("chain name %q changed: every node would rewrite every chain on upgrade", a)
	}
	seen := map[string]string{}
	for _, n := range []string{
		a,
		serviceChainName("default", "web", "http", UDP),
		serviceChainName("default", "web", "https", TCP),
		serviceChainName("default", "webh", "ttp", TCP),
		serviceChainName("other", "web", "http", TCP),
		endpointChainName("default", "web", "http", TCP, Endpoint{"10.0.0.1", 80}),
		endpointChainName("default", "web", "http", TCP, Endpoint{"10.0.0.1", 81}),
	} {
		if len(n) > 28 {
			t.Errorf("%q is longer than 28", n)
		}
		if seen[n] != "" {
			t.Errorf("%q named twice", n)
		}
		seen[n] = n
	}
}

func TestServiceValidation(t *testing.T) {
	ok := Service{Namespace: "default", Name: "web", ClusterIP: "10.96.0.10", Ports: []ServicePort{
		{Name: "http", Protocol: TCP, Port: 80, Endpoints: []Endpoint{{"10.244.1.2", 8080}}},
	}}
	tests := []struct {
		name   string
		change func(*Service)
		want   string
	}{
		{"no namespace", func(s *Service) { s.Namespace = "" }, "namespace"},
		{"name with a quote", func(s *Service) { s.Name = `we"b` }, "name"},
		{"IPv6 cluster IP", func(s *Service) { s.ClusterIP = "fd00::1" }, `clusterIP: "fd00::1" is not an IPv4 address`},
		{"no cluster IP", func(s *Service) { s.ClusterIP = "" }, "clusterIP"},
		{"SCTP", func(s *Service) { s.Ports[0].Protocol = "SCTP" }, `ports[0].protocol: "SCTP" must be TCP or UDP`},
		{"port 0", func(s *Service) { s.Ports[0].Port = 0 }, "ports[0].port: 0 is not a port number"},
		{"node port too big", func(s *Service) { s.Ports[0].NodePort = 70000 }, "ports[0].nodePort"},
		{"endpoint IP", func(s *Service) { s.Ports[0].Endpoints[0].IP = "10.244.1" }, "ports[0].endpoints[0].ip"},
		{"endpoint port", func(s *Service) { s.Ports[0].Endpoints[0].Port = -1 }, "ports[0].endpoints[0].port"},
		{"endpoint twice", func(s *Service) { s.Ports[0].Endpoints = append(s.Ports[0].Endpoints, s.Ports[0].Endpoints[0]) }, "ports[0].endpoints[1]: 10.244.1.2:8080 is listed twice"},
		{"unnamed port among two", func(s *Service) {
			s.Ports = append(s.Ports, ServicePort{Protocol: TCP, Port: 81})
		}, "ports[1].name: must be set"},
		{"port twice", func(s *Service) {
			s.Ports = append(s.Ports, ServicePort{Name: "again", Protocol: TCP, Port: 80})
		}, "ports[1].port: TCP 80 is used by another port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := ok.clone()
			tt.change(&svc)
			p, _ := New(Config{})
			err := p.SetService(svc)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "service ") {
				t.Fatalf("SetService = %v, want an error naming %q", err, tt.want)
			}
			if len(p.desired) != 0 {
				t.Errorf("a refused service entered the desired state")
			}
			if err := p.Replace([]Service{ok, svc}); err == nil {
				t.Errorf("Replace took a bad service")
			}
		})
	}
	p, _ := New(Config{})
	if err := p.Replace([]Service{ok, ok}); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Errorf("Replace with a service twice = %v", err)
	}
}

func TestStaleUDPFlows(t *testing.T) {
	moved := dns.clone()
	moved.Ports[0].Endpoints = moved.Ports[0].Endpoints[1:] // 10.244.1.5 leaves the UDP port
	moved.Ports[1].Endpoints = nil                          // TCP endpoints are not tracked
	tests := []struct {
		name      string
		old, next *Service
		want      []staleFlow
	}{
		{"nothing changed", &dns, &dns, nil},
		{"an endpoint left", &dns, &moved, []staleFlow{{"10.96.0.53", 53, 30053, Endpoint{"10.244.1.5", 53}}}},
		{"the service left", &dns, nil, []staleFlow{
			{"10.96.0.53", 53, 30053, Endpoint{"10.244.1.5", 53}},
			{"10.96.0.53", 53, 30053, Endpoint{"10.244.2.5", 5353}},
		}},
		{"TCP only", &web, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := staleUDPFlows(tt.old, tt.next); !slices.Equal(got, tt.want) {
				t.Errorf("staleUDPFlows = %+v, want %+v", got, tt.want)
			}
		})
	}
}
