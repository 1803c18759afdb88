package proxy

import (
	"context"
	"fmt"
	"testing"
)

// benchServices makes n services of eps endpoints each.
func benchServices(n, eps int) []Service {
	svcs := make([]Service, n)
	for i := range svcs {
		port := ServicePort{Name: "http", Protocol: TCP, Port: 80, NodePort: int32(30000 + i%2768)}
		if i >= 2768 {
			port.NodePort = 0
		}
		for j := range eps {
			port.Endpoints = append(port.Endpoints, Endpoint{IP: fmt.Sprintf("10.%d.%d.%d", 100+i/250, i%250, j+1), Port: 8080})
		}
		svcs[i] = Service{Namespace: "bench", Name: fmt.Sprintf("svc-%d", i),
			ClusterIP: fmt.Sprintf("10.96.%d.%d", i/250, i%250+1), Ports: []ServicePort{port}}
	}
	return svcs
}

// BenchmarkProxySync syncs 1,000 services of 10 endpoints each into a
// test namespace with the real iptables-restore: a full sync into empty
// tables (a node's first), a full one over the same rules (a restart, the
// periodic resync), a full one over rules of which 1% of the services
// differ, a full one over rules that all differ (an upgrade that renders
// every rule anew), and an incremental one after one endpoint changed.
func BenchmarkProxySync(b *testing.B) {
	requireRoot(b)
	ns := newNS(b, nsDir(b), "bench")
	ctx := context.Background()
	svcs := benchServices(1000, 10)
	p, err := New(Config{InNetNS: inNS(ns)})
	must(b, "new proxier", err)
	b.Cleanup(func() { p.Cleanup(context.Background()) })
	must(b, "replace", p.Replace(svcs))

	// moved returns svcs with every step-th service's endpoints on
	// another port, the port given by round.
	moved := func(step, round int) []Service {
		out := make([]Service, len(svcs))
		for i := range svcs {
			out[i] = svcs[i].clone()
			if i%step == 0 {
				for j := range out[i].Ports[0].Endpoints {
					out[i].Ports[0].Endpoints[j].Port = 9000 + int32(round%1000)
				}
			}
		}
		return out
	}
	b.Run("full-empty", func(b *testing.B) { // the first sync of a node
		for b.Loop() {
			b.StopTimer()
			must(b, "cleanup", p.Cleanup(ctx))
			b.StartTimer()
			must(b, "sync", p.Sync(ctx))
		}
	})
	b.Run("full-identical", func(b *testing.B) { // a restart, the periodic resync
		must(b, "sync", p.Sync(ctx))
		for b.Loop() {
			p.Resync()
			must(b, "sync", p.Sync(ctx))
		}
	})
	for _, c := range []struct {
		name string
		step int
	}{{"full-1pct-changed", 100}, {"full-all-changed", 1}} {
		b.Run(c.name, func(b *testing.B) { // a restart after changes while down
			round := 0
			for b.Loop() {
				b.StopTimer()
				round++
				must(b, "replace", p.Replace(moved(c.step, round)))
				p.Resync()
				b.StartTimer()
				must(b, "sync", p.Sync(ctx))
			}
		})
	}
	b.Run("incremental", func(b *testing.B) {
		must(b, "replace", p.Replace(svcs))
		must(b, "sync", p.Sync(ctx))
		i := 0
		for b.Loop() {
			svc := svcs[i%len(svcs)].clone()
			i++
			svc.Ports[0].Endpoints[0].Port = 9000 + int32(i%1000)
			must(b, "set service", p.SetService(svc))
			must(b, "sync", p.Sync(ctx))
		}
	})
}

// BenchmarkProxySyncPhases times the parts of a full sync over populated
// tables, to see where the time goes.
func BenchmarkProxySyncPhases(b *testing.B) {
	requireRoot(b)
	ns := newNS(b, nsDir(b), "bench")
	ctx := context.Background()
	p, err := New(Config{InNetNS: inNS(ns)})
	must(b, "new proxier", err)
	b.Cleanup(func() { p.Cleanup(context.Background()) })
	must(b, "replace", p.Replace(benchServices(1000, 10)))
	must(b, "sync", p.Sync(ctx))
	b.Run("list", func(b *testing.B) {
		for b.Loop() {
			_, err := p.listChains(ctx)
			must(b, "list", err)
		}
	})
	existing, err := p.listChains(ctx)
	must(b, "list", err)
	b.Run("plan", func(b *testing.B) {
		for b.Loop() {
			p.plan(true, existing).in.bytes()
		}
	})
	b.Run("restore-all", func(b *testing.B) {
		for b.Loop() {
			must(b, "restore", p.restoreRun(ctx, p.plan(true, nil).in))
		}
	})
	b.Run("jumps", func(b *testing.B) {
		for b.Loop() {
			must(b, "jumps", p.ensureJumps(ctx))
		}
	})
}
