package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
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

// kernelRules returns the rules of the SKIFF-* chains in the namespace as
// iptables-save lists them, keyed table/name.
func kernelRules(t testing.TB, ns string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	table := ""
	for line := range strings.Lines(iptablesSave(t, ns)) {
		line = strings.TrimSuffix(line, "\n")
		if name, ok := strings.CutPrefix(line, "*"); ok {
			table = name
		}
		if name, ok := strings.CutPrefix(line, ":"+chainPrefix); ok {
			name, _, _ = strings.Cut(name, " ")
			out[table+"/"+chainPrefix+name] = []string{}
		}
		if rest, ok := strings.CutPrefix(line, "-A "+chainPrefix); ok {
			name, _, _ := strings.Cut(rest, " ")
			id := table + "/" + chainPrefix + name
			out[id] = append(out[id], line)
		}
	}
	return out
}

// rulesDiff lists, one chain a line, how the kernel's SKIFF-* chains in
// the namespace differ from a full rendering of p's desired state; "" when
// the kernel holds exactly that rendering.
func rulesDiff(t testing.TB, p *Proxier, ns string) string {
	t.Helper()
	got := kernelRules(t, ns)
	want := map[string][]string{}
	for table, cs := range p.plan(true, nil).in.write {
		for _, c := range cs {
			want[table+"/"+c.name] = c.rules
		}
	}
	var diffs []string
	for id, rules := range want {
		have, ok := got[id]
		switch {
		case !ok:
			diffs = append(diffs, id+": missing")
		case !slices.Equal(have, rules):
			diffs = append(diffs, fmt.Sprintf("%s: the kernel lists\n\t%s\nwant\n\t%s", id, strings.Join(have, "\n\t"), strings.Join(rules, "\n\t")))
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			diffs = append(diffs, id+": not wanted")
		}
	}
	slices.Sort(diffs)
	return strings.Join(diffs, "\n")
}

// syncLog records the proxier's debug log, and tells how many chains the
// last sync wrote.
type syncLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *syncLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(b)
}

func (l *syncLog) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

var chainsWritten = regexp.MustCompile(`msg="synced services" .* chains=(\d+) `)

// lastChains returns the number of chains the last sync logged it wrote.
func (l *syncLog) lastChains(t testing.TB) string {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	m := chainsWritten.FindAllStringSubmatch(l.buf.String(), -1)
	if len(m) == 0 {
		t.Fatalf("no sync logged:\n%s", l.buf.String())
	}
	return m[len(m)-1][1]
}

// TestRenderingIsCanonical syncs varied services into empty tables and
// checks that the kernel lists every rule exactly as the proxy renders it,
// and so that a full sync over them writes nothing: a rule the kernel
// lists otherwise would make every full sync rewrite its chain.
func TestRenderingIsCanonical(t *testing.T) {
	requireRoot(t)
	many := Service{Namespace: "ns-1", Name: "many_7", ClusterIP: "10.96.3.200", Ports: []ServicePort{
		{Protocol: UDP, Port: 5353, NodePort: 31000},
	}}
	for i := range 7 {
		many.Ports[0].Endpoints = append(many.Ports[0].Endpoints, Endpoint{fmt.Sprintf("192.168.%d.%d", i, 250-i), int32(1 + i*9000)})
	}
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no CIDRs", Config{}},
		{"CIDRs and a mark", Config{ClusterCIDR: "10.244.0.0/16", ServiceCIDR: "10.96.0.0/12", MasqueradeMark: 0x10000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := newNS(t, nsDir(t), "node")
			ctx := context.Background()
			var log syncLog
			cfg := tt.cfg
			cfg.InNetNS, cfg.Logger = inNS(ns), log.logger()
			p, err := New(cfg)
			must(t, "new proxier", err)
			t.Cleanup(func() { p.Cleanup(context.Background()) })
			must(t, "replace", p.Replace(append([]Service{web, dns, idle, many}, benchServices(3, 10)...)))
			must(t, "sync", p.Sync(ctx))
			if d := rulesDiff(t, p, ns); d != "" {
				t.Fatalf("the kernel lists the rules otherwise than rendered:\n%s", d)
			}
			p.Resync()
			must(t, "full sync over the same rules", p.Sync(ctx))
			if n := log.lastChains(t); n != "0" {
				t.Errorf("a full sync over the same rules wrote %s chains, want 0", n)
			}
		})
	}
}

// TestFullSyncWritesWhatDiffers changes the kernel behind the proxier's
// back, as a crash or an admin would, and checks that a full sync puts
// back exactly the rendering, writing only the chains that differ.
func TestFullSyncWritesWhatDiffers(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, nsDir(t), "node")
	ctx := context.Background()
	var log syncLog
	p, err := New(Config{InNetNS: inNS(ns), ClusterCIDR: "10.244.0.0/16", Logger: log.logger()})
	must(t, "new proxier", err)
	t.Cleanup(func() { p.Cleanup(context.Background()) })
	must(t, "replace", p.Replace([]Service{web, dns, idle}))
	must(t, "sync", p.Sync(ctx))

	sep := endpointChainName("default", "web", "http", TCP, web.Ports[0].Endpoints[0])
	runIn(t, ns, "iptables", "-t", "nat", "-R", sep, "2", "-p", "tcp", "-j", "DNAT", "--to-destination", "10.244.1.2:9999")
	runIn(t, ns, "iptables", "-t", "nat", "-F", serviceChainName("kube-system", "dns", "dns", UDP))
	runIn(t, ns, "iptables", "-t", "nat", "-N", "SKIFF-SEP-STALE")
	runIn(t, ns, "iptables", "-t", "nat", "-A", "SKIFF-SEP-STALE", "-j", "RETURN")
	runIn(t, ns, "iptables", "-t", "filter", "-D", "OUTPUT", "-m", "conntrack", "--ctstate", "NEW",
		"-m", "comment", "--comment", "skiff services without endpoints", "-j", servicesChain)
	if rulesDiff(t, p, ns) == "" {
		t.Fatal("the kernel still holds the rendering after the changes")
	}

	p.Resync()
	must(t, "full sync", p.Sync(ctx))
	if d := rulesDiff(t, p, ns); d != "" {
		t.Errorf("after a full sync, the kernel differs:\n%s", d)
	}
	if n := log.lastChains(t); n != "2" {
		t.Errorf("the full sync wrote %s chains, want 2 (the changed endpoint chain and the flushed service chain)", n)
	}
	if out := runIn(t, ns, "iptables", "-t", "filter", "-S", "OUTPUT"); !strings.Contains(out, "skiff services without endpoints") {
		t.Errorf("the jump from filter OUTPUT is not back:\n%s", out)
	}
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
		if d := rulesDiff(t, p, ns); d != "" {
			t.Errorf("%s: the kernel's rules differ:\n%s", st.name, d)
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
