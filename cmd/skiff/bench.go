package main

// skiff bench store measures the control plane as its clients see it:
// writes, lists and watches through the API, never the store directly.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

const (
	// maxBenchClients keeps the writers well inside the API server's 400
	// unary calls in flight, with room for the scheduler and the nodes.
	maxBenchClients = 256
	// maxBenchWatchers keeps the watchers inside the API server's 1000
	// streams, with room for the scheduler's and the nodes' watches.
	maxBenchWatchers = 900
	// maxBenchSize is what fits in an object's annotations (256 KiB with
	// the key).
	maxBenchSize = 256<<10 - len(benchPayloadKey)
	// setupClients create and delete what a measurement needs around it.
	setupClients = 64
	// listRuns is how many times each list is timed.
	listRuns = 20
	// settleQuiet is how long the store's revision must stay still before
	// a measurement starts; settleMax bounds the wait.
	settleQuiet = 500 * time.Millisecond
	settleMax   = 2 * time.Minute
	// watchStall fails the watch measurement when no watcher receives
	// anything for this long.
	watchStall = 30 * time.Second

	benchLabel      = "skiff.dev/bench"
	benchPayloadKey = "skiff.dev/bench-payload"
	benchImage      = "skiff-bench.invalid/none"
	benchNamespace  = "default"
	nowhereSelector = "spec.nodeName=nowhere"
)

// benchOptions are skiff bench store's flags.
type benchOptions struct {
	writes     int
	clientsArg string
	clients    []int // parsed from clientsArg
	size       int
	kind       string
	listPods   int
	watchers   int
	watchPods  int
	skipList   bool
	skipWatch  bool
	servers    int
	cpuprofile string
}

func newBenchCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure skiff",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newBenchStoreCmd(g), newBenchNodeCmd(), newBenchCRICmd(), newBenchScheduleCmd())
	return cmd
}

func newBenchStoreCmd(g *globals) *cobra.Command {
	o := &benchOptions{}
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Measure the control plane through its API: writes, lists and watches",
		Long: `Store measures the control plane as a client sees it, through the API:

  writes   --writes objects created by each of --clients concurrent clients
           (one table row per client count): writes/s and the p50 and p99
           latency of a create. Each object carries --size bytes: a
           namespace an annotation, a pod an env var value.
  list     --list-pods pods stored, then ` + strconv.Itoa(listRuns) + ` lists of every pod and ` + strconv.Itoa(listRuns) + ` lists
           with the field selector ` + nowhereSelector + `, which matches none:
           p50 and p99.
  watch    --watchers watches of the bench's pods open while --watch-pods
           pods are created (by ` + strconv.Itoa(setupClients) + ` clients): every event any watcher
           receives, divided by the time from the first create to the last
           watcher's last ADDED event.

Without --server it starts --servers servers in this process (1, or 3 as a
cluster of three on 127.0.0.1, 127.0.0.2 and 127.0.0.3, measured through the
leader), each with a fresh data directory under $TMPDIR (on tmpfs, writes
skip the disk's fsync), and removes them afterwards; $SKIFF_SERVER is ignored, so that a bench never
writes to a cluster by accident. With --server it measures that cluster, and
deletes what it created when done. Pods are created unbound in namespace
"default", so the cluster's scheduler takes part: with no node it marks each
pod unschedulable (one status update and one event per pod); with nodes it
binds them, and their agents fail to start them (there is no image
` + benchImage + `).

Before each measurement it waits until the server has finished reacting to
the last (the store's revision stays still for ` + settleQuiet.String() + `).

The client is Connect's default over HTTP/2 cleartext: requests are sent
uncompressed and responses come back gzipped.`,
		Example: `  skiff bench store --clients 1,64 --writes 5000
  skiff bench store --kind pods --clients 1,64 --writes 5000 --skip-list --skip-watch
  skiff bench store --server 127.0.0.1:7650 --list-pods 10000 --watchers 100`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			var target *clientConfig
			if cmd.Flags().Changed("server") {
				cfg, err := g.clientConfig()
				if err != nil {
					return err
				}
				target = &cfg
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runBenchStore(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), target, o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.writes, "writes", 10000, "objects each write measurement creates")
	f.StringVar(&o.clientsArg, "clients", "1", "concurrent writers; a list (1,64) runs the write measurement once per count")
	f.IntVar(&o.size, "size", 512, "bytes of payload per object")
	f.StringVar(&o.kind, "kind", "namespaces", "what the write measurement creates: namespaces or pods")
	f.IntVar(&o.listPods, "list-pods", 10000, "pods stored for the list measurement")
	f.IntVar(&o.watchers, "watchers", 100, "watches open during the watch measurement")
	f.IntVar(&o.watchPods, "watch-pods", 500, "pods created during the watch measurement; each makes two events, and the server drops a watcher 4096 events behind")
	f.BoolVar(&o.skipList, "skip-list", false, "skip the list measurement")
	f.BoolVar(&o.skipWatch, "skip-watch", false, "skip the watch measurement")
	f.IntVar(&o.servers, "servers", 1, "servers the bench starts when not given --server: 1, or 3 (a cluster of three, on loopback)")
	f.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of each timed section to FILE.<section>.pprof (in-process server included)")
	_ = f.MarkHidden("cpuprofile")
	return cmd
}

func (o *benchOptions) validate() error {
	clients, err := parseClients(o.clientsArg)
	if err != nil {
		return err
	}
	o.clients = clients
	if o.kind != "namespaces" && o.kind != "pods" {
		return fmt.Errorf("--kind: unsupported value %q: use namespaces or pods", o.kind)
	}
	if o.size < 0 || o.size > maxBenchSize {
		return fmt.Errorf("--size: invalid value \"%d\": must be from 0 to %d", o.size, maxBenchSize)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"writes", o.writes}, {"list-pods", o.listPods}, {"watchers", o.watchers}, {"watch-pods", o.watchPods}} {
		if f.v < 1 {
			return fmt.Errorf("--%s: invalid value \"%d\": must be 1 or more", f.name, f.v)
		}
	}
	if o.servers != 1 && o.servers != 3 {
		return fmt.Errorf("--servers: invalid value \"%d\": must be 1 or 3", o.servers)
	}
	if o.watchers > maxBenchWatchers {
		return fmt.Errorf("--watchers: invalid value \"%d\": must be at most %d (the server serves 1000 streams at once)", o.watchers, maxBenchWatchers)
	}
	return nil
}

// parseClients parses --clients: one count or a comma-separated list.
func parseClients(s string) ([]int, error) {
	var out []int
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		n, err := strconv.Atoi(part)
		switch {
		case err != nil:
			return nil, fmt.Errorf("--clients: invalid value %q: must be a number or a comma-separated list of numbers, such as 1,64", part)
		case n < 1:
			return nil, fmt.Errorf("--clients: invalid value %q: must be 1 or more", part)
		case n > maxBenchClients:
			return nil, fmt.Errorf("--clients: invalid value %q: must be at most %d (the server serves 400 calls at once)", part, maxBenchClients)
		}
		out = append(out, n)
	}
	return out, nil
}

// runBenchStore runs the measurements against target, or against a server
// of its own when target is empty, and prints a table for each to out.
// progress hears what it is doing meanwhile.
func runBenchStore(ctx context.Context, out, progress io.Writer, target *clientConfig, o *benchOptions) (err error) {
	var where string
	if target != nil {
		where = "server at " + target.Server
	} else {
		local, err := startBenchServers(ctx, progress, o.servers, nil)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, local.stop()) }()
		target = &local.cfg
		where = fmt.Sprintf("in-process server on %s, data in %s (removed afterwards)", local.addr, local.dir)
		if o.servers > 1 {
			where = fmt.Sprintf("%d in-process servers on loopback, through the leader on %s, data in %s (removed afterwards)", o.servers, local.addr, local.dir)
		}
	}
	b, err := newBench(*target, o, progress)
	if err != nil {
		return err
	}
	defer b.close()
	wire := "HTTP/2 cleartext"
	if strings.HasPrefix(target.baseURL(), "https://") {
		wire = "HTTP/2 over TLS 1.3"
	}
	if target.Token != "" {
		wire += ", a bearer token on every call"
	}
	fmt.Fprintf(out, "target: %s\nclient: Connect over %s; requests uncompressed, responses gzip (connect-go's default)\n\n", where, wire)

	writes, err := b.measureWrites(ctx)
	if err != nil {
		return err
	}
	printWrites(out, o, writes)
	if !o.skipList {
		lists, err := b.measureList(ctx)
		if err != nil {
			return err
		}
		printLists(out, lists)
	}
	if !o.skipWatch {
		w, err := b.measureWatch(ctx)
		if err != nil {
			return err
		}
		printWatch(out, w)
	}
	return nil
}

// bench holds the clients of one run of skiff bench store.
type bench struct {
	o        *benchOptions
	run      string // names this run's objects and labels them
	payload  string
	progress io.Writer
	tr       *http.Transport
	ns       skiffv1connect.NamespaceServiceClient
	pods     skiffv1connect.PodServiceClient
	nodes    skiffv1connect.NodeServiceClient
}

func newBench(cfg clientConfig, o *benchOptions, progress io.Writer) (*bench, error) {
	base := cfg.baseURL()
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	id := make([]byte, 4)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("name the bench run: %w", err)
	}
	// HTTP/2 (over TLS, or cleartext with prior knowledge): every call is
	// a stream on a shared connection, so concurrency costs no connection
	// setup.
	p := new(http.Protocols)
	if strings.HasPrefix(base, "https://") {
		p.SetHTTP2(true)
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	tr := &http.Transport{Protocols: p, TLSClientConfig: tc}
	hc := &http.Client{Transport: cfg.authorize(tr)}
	return &bench{
		o: o, run: hex.EncodeToString(id), payload: strings.Repeat("x", o.size), progress: progress, tr: tr,
		ns:    skiffv1connect.NewNamespaceServiceClient(hc, base),
		pods:  skiffv1connect.NewPodServiceClient(hc, base),
		nodes: skiffv1connect.NewNodeServiceClient(hc, base),
	}, nil
}

func (b *bench) close() { b.tr.CloseIdleConnections() }

func (b *bench) say(format string, args ...any) {
	fmt.Fprintf(b.progress, "bench: "+format+"\n", args...)
}

// name is the name of a bench object: its run, its section and its index.
func (b *bench) name(section string, i int) string {
	return fmt.Sprintf("bench-%s-%s-%d", b.run, section, i)
}

func (b *bench) createNamespace(ctx context.Context, name string) error {
	_, err := b.ns.Create(ctx, connect.NewRequest(&skiffv1.Namespace{Metadata: &skiffv1.ObjectMeta{
		Name:        name,
		Labels:      map[string]string{benchLabel: b.run},
		Annotations: map[string]string{benchPayloadKey: b.payload},
	}}))
	if err != nil {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}

func (b *bench) createPod(ctx context.Context, name string) error {
	_, err := b.pods.Create(ctx, connect.NewRequest(&skiffv1.Pod{
		Metadata: &skiffv1.ObjectMeta{Name: name, Namespace: benchNamespace, Labels: map[string]string{benchLabel: b.run}},
		Spec: &skiffv1.PodSpec{RestartPolicy: "Never", Containers: []*skiffv1.Container{{
			Name: "bench", Image: benchImage, Env: []*skiffv1.EnvVar{{Name: "PAYLOAD", Value: b.payload}},
		}}},
	}))
	if err != nil {
		return fmt.Errorf("create pod %s/%s: %w", benchNamespace, name, err)
	}
	return nil
}

func (b *bench) deleteNamespace(ctx context.Context, name string) error {
	_, err := b.ns.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: name}))
	if err != nil && connect.CodeOf(err) != connect.CodeNotFound {
		return fmt.Errorf("delete namespace %s: %w", name, err)
	}
	return nil
}

func (b *bench) deletePod(ctx context.Context, name string) error {
	now := int64(0)
	_, err := b.pods.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Namespace: benchNamespace, Name: name, GracePeriodSeconds: &now}))
	if err != nil && connect.CodeOf(err) != connect.CodeNotFound {
		return fmt.Errorf("delete pod %s/%s: %w", benchNamespace, name, err)
	}
	return nil
}

// create creates n objects of a section with setupClients clients.
func (b *bench) create(ctx context.Context, section string, n int, create func(context.Context, string) error) error {
	_, err := parallel(ctx, setupClients, n, func(ctx context.Context, i int) error { return create(ctx, b.name(section, i)) })
	return err
}

// cleanUp deletes the n objects of a section that exist; it is called on
// failure too, so that a bench against a cluster leaves nothing behind.
func (b *bench) cleanUp(ctx context.Context, section string, n int, del func(context.Context, string) error) error {
	if ctx.Err() != nil {
		return nil // interrupted: leave it to the user
	}
	_, err := parallel(ctx, setupClients, n, func(ctx context.Context, i int) error { return del(ctx, b.name(section, i)) })
	return err
}

// settle waits until the server has finished reacting to what came before
// (the scheduler's status updates and events after pods are created or
// deleted): until the store's revision stays still for settleQuiet.
func (b *bench) settle(ctx context.Context) error {
	return settleStore(ctx, b.nodes, b.say)
}

// settleStore waits until the store's revision, as a list of nodes reads
// it, stays still for settleQuiet, or says it gives up after settleMax.
func settleStore(ctx context.Context, nodes skiffv1connect.NodeServiceClient, say func(string, ...any)) error {
	start := time.Now()
	var last uint64
	still := start
	for {
		res, err := nodes.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
		if err != nil {
			return fmt.Errorf("read the store's revision: %w", err)
		}
		now := time.Now()
		if rev := res.Msg.GetResourceVersion(); rev != last {
			last, still = rev, now
		} else if now.Sub(still) >= settleQuiet {
			return nil
		}
		if now.Sub(start) > settleMax {
			say("the server is still writing after %s; measuring anyway", settleMax)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(settleQuiet / 5):
		}
	}
}

// profile starts a CPU profile of a timed section when --cpuprofile asks;
// the returned function ends it.
func (b *bench) profile(section string) (func() error, error) {
	if b.o.cpuprofile == "" {
		return func() error { return nil }, nil
	}
	name := b.o.cpuprofile + "." + section + ".pprof"
	f, err := os.Create(name)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		return nil, errors.Join(fmt.Errorf("--cpuprofile: %w", err), f.Close())
	}
	return func() error {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		b.say("wrote %s", name)
		return nil
	}, nil
}

// timed runs f as a profiled section and returns how long it took.
func (b *bench) timed(section string, f func() error) (time.Duration, error) {
	stop, err := b.profile(section)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	err = f()
	took := time.Since(start)
	return took, errors.Join(err, stop())
}

// latencies are the durations of calls, in any order.
type latencies []time.Duration

// percentile returns the nearest-rank q-th percentile (0 < q ≤ 1).
func (l latencies) percentile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	i := int(float64(len(s))*q+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// parallel calls op(ctx, i) for every i in [0, n) from `workers`
// goroutines, and returns each call's duration. It stops at the first error
// and returns it.
func parallel(ctx context.Context, workers, n int, op func(context.Context, int) error) (latencies, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	lat := make(latencies, n)
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				start := time.Now()
				if err := op(ctx, i); err != nil {
					cancel(err)
					return
				}
				lat[i] = time.Since(start)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return lat, nil
}

// writeResult is one row of the writes table.
type writeResult struct {
	clients  int
	took     time.Duration
	p50, p99 time.Duration
}

func (b *bench) measureWrites(ctx context.Context) ([]writeResult, error) {
	create, del := b.createNamespace, b.deleteNamespace
	if b.o.kind == "pods" {
		create, del = b.createPod, b.deletePod
	}
	var out []writeResult
	for _, c := range b.o.clients {
		section := "w" + strconv.Itoa(c)
		if err := b.settle(ctx); err != nil {
			return nil, err
		}
		b.say("creating %d %s with %d client(s)", b.o.writes, b.o.kind, c)
		var lat latencies
		took, err := b.timed("writes-"+b.o.kind+"-c"+strconv.Itoa(c), func() (err error) {
			lat, err = parallel(ctx, c, b.o.writes, func(ctx context.Context, i int) error { return create(ctx, b.name(section, i)) })
			return err
		})
		if err := errors.Join(err, b.cleanUp(ctx, section, b.o.writes, del)); err != nil {
			return nil, fmt.Errorf("writes with %d client(s): %w", c, err)
		}
		out = append(out, writeResult{clients: c, took: took, p50: lat.percentile(0.5), p99: lat.percentile(0.99)})
	}
	return out, nil
}

// listResult is one row of the list table.
type listResult struct {
	selector         string
	stored, returned int
	p50, p99         time.Duration
}

func (b *bench) measureList(ctx context.Context) (res []listResult, err error) {
	n := b.o.listPods
	b.say("creating %d pods to list", n)
	defer func() { err = errors.Join(err, b.cleanUp(ctx, "list", n, b.deletePod)) }()
	if err := b.create(ctx, "list", n, b.createPod); err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	if err := b.settle(ctx); err != nil {
		return nil, err
	}
	stored := 0
	for _, sel := range []string{"", nowhereSelector} {
		section := "list-all"
		if sel != "" {
			section = "list-selected"
		}
		b.say("listing pods %d times (field selector %q)", listRuns, sel)
		returned := 0
		var lat latencies
		_, err := b.timed(section, func() error {
			for range listRuns {
				start := time.Now()
				r, err := b.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{FieldSelector: sel}))
				if err != nil {
					return fmt.Errorf("list pods: %w", err)
				}
				lat = append(lat, time.Since(start))
				returned = len(r.Msg.GetItems())
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if sel == "" {
			stored = returned
		}
		res = append(res, listResult{selector: sel, stored: stored, returned: returned, p50: lat.percentile(0.5), p99: lat.percentile(0.99)})
	}
	return res, nil
}

// watchResult is the row of the watch table.
type watchResult struct {
	watchers, pods int
	events         int64
	took           time.Duration
}

// watcher is one open watch and what it received.
type watcher struct {
	st     *connect.ServerStreamForClient[skiffv1.PodWatchEvent]
	events int64     // every event received until the last ADDED
	last   time.Time // when the last ADDED came
}

// follow receives until it has seen want ADDED events; it counts every event
// in total as it goes.
func (w *watcher) follow(want int, total *atomic.Int64) error {
	added := 0
	for w.st.Receive() {
		if w.st.Msg().GetType() == skiffv1.EventType_EVENT_TYPE_BOOKMARK {
			continue // no change; none come unless asked for
		}
		w.events++
		total.Add(1)
		if w.st.Msg().GetType() == skiffv1.EventType_EVENT_TYPE_ADDED {
			if added++; added == want {
				w.last = time.Now()
				return nil
			}
		}
	}
	err := w.st.Err()
	if err == nil {
		err = errors.New("the server ended it")
	}
	return fmt.Errorf("watch after %d of %d ADDED events: %w", added, want, err)
}

func (b *bench) measureWatch(ctx context.Context) (res *watchResult, err error) {
	if err := b.settle(ctx); err != nil {
		return nil, err
	}
	b.say("opening %d watches", b.o.watchers)
	wctx, cancel := context.WithCancel(ctx)
	ws := make([]*watcher, 0, b.o.watchers)
	defer func() {
		cancel()
		for _, w := range ws {
			_ = w.st.Close()
		}
		err = errors.Join(err, b.cleanUp(ctx, "watch", b.o.watchPods, b.deletePod))
	}()
	for range b.o.watchers {
		st, err := b.pods.Watch(wctx, connect.NewRequest(&skiffv1.WatchRequest{LabelSelector: benchLabel + "=" + b.run}))
		if err != nil {
			return nil, fmt.Errorf("watch pods: %w", err)
		}
		ws = append(ws, &watcher{st: st})
		st.ResponseHeader() // the server sends the headers once the watch is established
	}

	b.say("creating %d pods with %d watching", b.o.watchPods, b.o.watchers)
	stop, err := b.profile("watch")
	if err != nil {
		return nil, err
	}
	var total atomic.Int64
	done := make(chan error, len(ws))
	created := make(chan error, 1)
	start := time.Now()
	for _, w := range ws {
		go func() { done <- w.follow(b.o.watchPods, &total) }()
	}
	go func() { created <- b.create(wctx, "watch", b.o.watchPods, b.createPod) }()
	following, creating := len(ws), true
	stall := time.NewTicker(watchStall)
	defer stall.Stop()
	seen := int64(-1)
	var failed error
	for (following > 0 || creating) && failed == nil {
		select {
		case failed = <-done:
			following--
		case failed = <-created:
			creating = false
		case <-stall.C:
			n := total.Load()
			if n == seen {
				failed = fmt.Errorf("no event for %s (%d received in all)", watchStall, n)
			}
			seen = n
		case <-ctx.Done():
			failed = ctx.Err()
		}
	}
	// Stop whatever still runs, and wait for it: a follower owns its stream
	// until it returns.
	cancel()
	for ; following > 0; following-- {
		<-done
	}
	if creating {
		<-created
	}
	if err := errors.Join(failed, stop()); err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	res = &watchResult{watchers: len(ws), pods: b.o.watchPods}
	for _, w := range ws {
		res.events += w.events
		res.took = max(res.took, w.last.Sub(start))
	}
	return res, nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

func printWrites(out io.Writer, o *benchOptions, rows []writeResult) {
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "WRITES\tSIZE\tCLIENTS\tOBJECTS\tWRITES/S\tP50\tP99\n")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.0f\t%s\t%s\n", o.kind, o.size, r.clients, o.writes,
			float64(o.writes)/r.took.Seconds(), ms(r.p50), ms(r.p99))
	}
	_ = tw.Flush()
	fmt.Fprintln(out)
}

func printLists(out io.Writer, rows []listResult) {
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "LIST\tSELECTOR\tSTORED\tRETURNED\tRUNS\tP50\tP99\n")
	for _, r := range rows {
		sel := r.selector
		if sel == "" {
			sel = "-"
		}
		fmt.Fprintf(tw, "pods\t%s\t%d\t%d\t%d\t%s\t%s\n", sel, r.stored, r.returned, listRuns, ms(r.p50), ms(r.p99))
	}
	_ = tw.Flush()
	fmt.Fprintln(out)
}

func printWatch(out io.Writer, r *watchResult) {
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "WATCH\tWATCHERS\tPODS\tEVENTS\tTOOK\tEVENTS/S\n")
	fmt.Fprintf(tw, "pods\t%d\t%d\t%d\t%s\t%.0f\n", r.watchers, r.pods, r.events, ms(r.took), float64(r.events)/r.took.Seconds())
	_ = tw.Flush()
	fmt.Fprintln(out)
}
