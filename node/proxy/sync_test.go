package proxy

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"skiff.dev/skiff/netns"
)

// kernelChains returns the SKIFF-* chains in the namespace, as
// "table/name", sorted.
func kernelChains(t *testing.T, ns string) []string {
	t.Helper()
	var out []string
	table := ""
	for line := range strings.Lines(iptablesSave(t, ns)) {
		if name, ok := strings.CutPrefix(line, "*"); ok {
			table = strings.TrimSpace(name)
		}
		if name, ok := strings.CutPrefix(line, ":"+chainPrefix); ok {
			name, _, _ = strings.Cut(name, " ")
			out = append(out, table+"/"+chainPrefix+name)
		}
	}
	slices.Sort(out)
	return out
}

// wantChains is the chains a full sync of the proxier's desired state
// keeps, sorted.
func wantChains(p *Proxier) []string {
	saved, savedShared := p.applied, p.shared
	pl := p.plan(true, nil)
	p.applied, p.shared = saved, savedShared
	var out []string
	for id := range pl.wanted {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// TestSyncKeepsTheKernelExact walks a proxier through changes in a test
// namespace and checks, after each sync, that the SKIFF-* chains in the
// kernel are exactly the wanted ones: leftovers of an earlier run and
// chains of removed services and endpoints are gone.
func TestSyncKeepsTheKernelExact(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, nsDir(t), "node")
	ctx := context.Background()
	// Leftovers of an earlier run, one referring to another.
	runIn(t, ns, "iptables", "-t", "nat", "-N", "SKIFF-SEP-LEFTOVER")
	runIn(t, ns, "iptables", "-t", "nat", "-N", "SKIFF-SVC-LEFTOVER")
	runIn(t, ns, "iptables", "-t", "nat", "-A", "SKIFF-SVC-LEFTOVER", "-j", "SKIFF-SEP-LEFTOVER")
	runIn(t, ns, "iptables", "-t", "filter", "-N", "SKIFF-OLD")

	p, err := New(Config{InNetNS: inNS(ns), ClusterCIDR: "10.244.0.0/16"})
	must(t, "new proxier", err)
	t.Cleanup(func() { p.Cleanup(context.Background()) })
	steps := []struct {
		name   string
		change func()
	}{
		{"first", func() { must(t, "replace", p.Replace([]Service{web, dns, idle})) }},
		{"endpoint changed", func() {
			svc := web.clone()
			svc.Ports[0].Endpoints[1].Port = 9090
			must(t, "set", p.SetService(svc))
		}},
		{"service removed", func() { p.DeleteService("kube-system", "dns") }},
		{"endpoints gone", func() {
			svc := web.clone()
			svc.Ports[0].Endpoints = nil
			must(t, "set", p.SetService(svc))
		}},
		{"service back", func() { must(t, "set", p.SetService(dns)) }},
		{"resync", p.Resync},
	}
	for _, st := range steps {
		st.change()
		must(t, st.name+": sync", p.Sync(ctx))
		if got, want := kernelChains(t, ns), wantChains(p); !slices.Equal(got, want) {
			t.Errorf("%s: chains in the kernel:\n%s\nwant:\n%s", st.name, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}

// TestFailedSyncIsFollowedByAFullOne makes one sync's restore fail and
// checks that the next sync is a full one that leaves the kernel exact.
func TestFailedSyncIsFollowedByAFullOne(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, nsDir(t), "node")
	ctx := context.Background()
	var fail atomic.Bool
	enter := func(fn func() error) error {
		if fail.Load() {
			return errors.New("injected failure")
		}
		return netns.Do(ns, fn)
	}
	p, err := New(Config{InNetNS: enter})
	must(t, "new proxier", err)
	t.Cleanup(func() { fail.Store(false); p.Cleanup(context.Background()) })
	must(t, "replace", p.Replace([]Service{web, dns}))
	must(t, "sync", p.Sync(ctx))

	p.DeleteService("kube-system", "dns")
	fail.Store(true)
	if err := p.Sync(ctx); err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("sync with a failing restore = %v, want the failure", err)
	}
	fail.Store(false)
	if !p.full {
		t.Error("after a failed sync, the next one is not full")
	}
	must(t, "sync after the failure", p.Sync(ctx))
	if got, want := kernelChains(t, ns), wantChains(p); !slices.Equal(got, want) {
		t.Errorf("chains in the kernel:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
