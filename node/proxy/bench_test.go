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
// tables, a full one over the same rules, and an incremental one after one
// endpoint changed.
func BenchmarkProxySync(b *testing.B) {
	requireRoot(b)
	ns := newNS(b, nsDir(b), "bench")
	ctx := context.Background()
	svcs := benchServices(1000, 10)
	p, err := New(Config{InNetNS: inNS(ns)})
	must(b, "new proxier", err)
	b.Cleanup(func() { p.Cleanup(context.Background()) })
	must(b, "replace", p.Replace(svcs))

	b.Run("full-empty", func(b *testing.B) { // the first sync of a node
		for b.Loop() {
			b.StopTimer()
			must(b, "cleanup", p.Cleanup(ctx))
			b.StartTimer()
			must(b, "sync", p.Sync(ctx))
		}
	})
	b.Run("full-resync", func(b *testing.B) { // every chain rewritten in place
		for b.Loop() {
			p.Resync()
			must(b, "sync", p.Sync(ctx))
		}
	})
	b.Run("incremental", func(b *testing.B) {
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
	b.Run("plan", func(b *testing.B) {
		for b.Loop() {
			p.plan(true, nil).in.bytes()
		}
	})
	b.Run("restore", func(b *testing.B) {
		for b.Loop() {
			in := p.plan(true, nil).in
			in.wholeCache = true
			_, err := p.restoreRun(ctx, in)
			must(b, "restore", err)
		}
	})
	b.Run("jumps", func(b *testing.B) {
		for b.Loop() {
			must(b, "jumps", p.ensureJumps(ctx))
		}
	})
}
