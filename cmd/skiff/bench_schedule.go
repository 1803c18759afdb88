package main

// skiff bench schedule measures the scheduler as a cluster sees it: pods
// created through the API, bound by the leader's scheduler, the bindings
// seen by a watch.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// Fake nodes' heartbeats are written again this often, well inside the
// scheduler's 40 s grace, so that a long run keeps them Ready.
const benchHeartbeat = 25 * time.Second

// benchScheduleOptions are skiff bench schedule's flags.
type benchScheduleOptions struct {
	nodes, pods, clients, servers int
	timeout                       time.Duration
	cpuprofile                    string
	// backlog holds the scheduler until every pod is created.
	backlog bool
}

func newBenchScheduleCmd() *cobra.Command {
	o := &benchScheduleOptions{}
	cmd := &cobra.Command{
		Use:   "schedule",
		Short: "Measure the scheduler: pods placed and bound per second on fake nodes",
		Long: `Schedule starts --servers servers in this process (a cluster of three on
127.0.0.1, 127.0.0.2 and 127.0.0.3 by default, data under $TMPDIR, removed
afterwards), registers --nodes fake nodes through the API (Ready, 64 CPUs,
256 GiB, 110 pods, runtime wasm; no agent runs them, and each one's
heartbeat is written again once ` + benchHeartbeat.String() + ` old, to keep it Ready), then
creates --pods pods through the API from --clients concurrent clients, as
fast as the API takes them. Each pod asks for 10m CPU and 16 MiB. The leader's scheduler binds them; a watch of
every pod sees each binding (a watch that falls too far behind lists the
pods again, and counts each pod it shows bound from the time of its
PodScheduled condition).

It reports:

  created   first create to last create answered, and creates/s
  placed    first create to last pod bound, and pods/s over it: placed and
            committed, end to end
  binding   first pod bound to last pod bound, and bound pods/s over it
  latency   create (the call sent) to bound (the watch event), p50, p99, max

With --backlog the scheduler is held while the pods are created, then
released: the figures are then the scheduler's own, placing and committing
a backlog, apart from how fast the API takes creates:

  created   as above; no pod is bound meanwhile
  placed    release to last pod bound, and pods/s over it
  binding   first pod bound to last pod bound, and bound pods/s over it
  latency   release to bound (the watch event), p50, p99, max

It fails if some pod is not bound within --timeout.`,
		Example: `  skiff bench schedule --nodes 5000 --pods 50000
  skiff bench schedule --nodes 5000 --pods 50000 --backlog
  skiff bench schedule --nodes 50 --pods 500 --servers 1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runBenchSchedule(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.nodes, "nodes", 100, "fake nodes to register")
	f.IntVar(&o.pods, "pods", 1000, "pods to create and have bound")
	f.IntVar(&o.clients, "clients", 128, "concurrent clients creating pods")
	f.IntVar(&o.servers, "servers", 3, "servers to start: 1, or 3 (a cluster of three, on loopback)")
	f.DurationVar(&o.timeout, "timeout", 10*time.Minute, "how long every pod may take to be bound")
	f.BoolVar(&o.backlog, "backlog", false, "hold the scheduler until every pod is created, then measure it placing the backlog")
	f.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the creates and bindings to FILE.schedule.pprof (in-process servers included)")
	_ = f.MarkHidden("cpuprofile")
	return cmd
}

func (o *benchScheduleOptions) validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{{"nodes", o.nodes}, {"pods", o.pods}, {"clients", o.clients}} {
		if f.v < 1 {
			return fmt.Errorf("--%s: invalid value \"%d\": must be 1 or more", f.name, f.v)
		}
	}
	if o.clients > maxBenchClients {
		return fmt.Errorf("--clients: invalid value \"%d\": must be at most %d (the server serves 400 calls at once)", o.clients, maxBenchClients)
	}
	if o.servers != 1 && o.servers != 3 {
		return fmt.Errorf("--servers: invalid value \"%d\": must be 1 or 3", o.servers)
	}
	if o.pods > o.nodes*110 {
		return fmt.Errorf("--pods: invalid value \"%d\": more than %d nodes of 110 pods take", o.pods, o.nodes)
	}
	if o.timeout <= 0 {
		return fmt.Errorf("--timeout: invalid value %q: must be positive", o.timeout)
	}
	return nil
}

// scheduleResult is what one run measured.
type scheduleResult struct {
	nodes, pods                int
	created, placed, binding   time.Duration // see the command's help
	p50, p99, worst            time.Duration
	firstBound, lastBound, end time.Time
	// backlog says the scheduler was held until every pod was created:
	// placed and the latencies count from its release.
	backlog bool
}

func runBenchSchedule(ctx context.Context, out, progress io.Writer, o *benchScheduleOptions) (err error) {
	var hold chan struct{}
	if o.backlog {
		hold = make(chan struct{})
	}
	local, err := startBenchServers(ctx, progress, o.servers, hold)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, local.stop()) }()
	b, err := newBench(local.cfg, &benchOptions{cpuprofile: o.cpuprofile}, progress)
	if err != nil {
		return err
	}
	defer b.close()
	b.say("registering %d fake nodes", o.nodes)
	registered := time.Now() // no later than any node's heartbeat
	if err := b.registerNodes(ctx, o.nodes); err != nil {
		return err
	}
	b.say("registered %d nodes in %s", o.nodes, time.Since(registered).Round(time.Millisecond))
	hctx, stopBeats := context.WithCancel(ctx)
	beats := make(chan error, 1)
	go func() { beats <- b.heartbeat(hctx, o.nodes, registered) }()
	defer func() {
		stopBeats()
		if berr := <-beats; berr != nil && hctx.Err() == nil {
			err = errors.Join(err, berr)
		}
	}()
	if err := b.settle(ctx); err != nil {
		return err
	}
	b.say("creating %d pods from %d clients", o.pods, o.clients)
	var r scheduleResult
	_, err = b.timed("schedule", func() error {
		r, err = b.measureSchedule(ctx, o, hold)
		return err
	})
	if err != nil {
		return err
	}
	where := fmt.Sprintf("%d in-process servers on loopback, through the leader on %s", o.servers, local.addr)
	if o.servers == 1 {
		where = "in-process server on " + local.addr
	}
	fmt.Fprintf(out, "target: %s, data in %s (removed afterwards)\n\n", where, local.dir)
	printSchedule(out, r)
	return nil
}

// fakeNode is a node that a bench registers: Ready, roomy, running Wasm.
func fakeNode(name string, now time.Time) *skiffv1.Node {
	res := map[string]string{"cpu": "64", "memory": "256Gi", "pods": "110"}
	return &skiffv1.Node{
		Metadata: &skiffv1.ObjectMeta{Name: name, Labels: map[string]string{benchLabel: "schedule"}},
		Spec:     &skiffv1.NodeSpec{},
		Status: &skiffv1.NodeStatus{
			Capacity: res, Allocatable: res, Runtimes: []string{"wasm"},
			Conditions: []*skiffv1.Condition{{Type: "Ready", Status: "True", Reason: "BenchNode", LastHeartbeatTime: timestamppb.New(now), LastTransitionTime: timestamppb.New(now)}},
		},
	}
}

func fakeNodeName(i int) string { return fmt.Sprintf("bench-node-%05d", i) }

// registerNodes creates n fake nodes. Each takes a pod CIDR, and creates
// at once may pick the same one: the loser is told to try again.
func (b *bench) registerNodes(ctx context.Context, n int) error {
	_, err := parallel(ctx, 8, n, func(ctx context.Context, i int) error {
		var err error
		for range 10 {
			_, err = b.nodes.Create(ctx, connect.NewRequest(fakeNode(fakeNodeName(i), time.Now())))
			if connect.CodeOf(err) != connect.CodeUnavailable {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("register node %s: %w", fakeNodeName(i), err)
		}
		return nil
	})
	return err
}

// heartbeat writes a fake node's Ready heartbeat again once it is
// benchHeartbeat old, until ctx ends. Nodes are registered one after the
// other, so their heartbeats are spread over time, and a run shorter than
// benchHeartbeat writes none.
func (b *bench) heartbeat(ctx context.Context, n int, registered time.Time) error {
	last := make([]time.Time, n)
	for i := range last {
		last[i] = registered
	}
	t := time.NewTicker(benchHeartbeat / 100)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		var due []int
		for i := range last {
			if time.Since(last[i]) >= benchHeartbeat {
				due = append(due, i)
			}
		}
		// From several clients, as the nodes' agents would: one after the
		// other, the writes of a few thousand nodes fall behind the
		// grace on a busy server.
		_, err := parallel(ctx, benchHeartbeatClients, len(due), func(ctx context.Context, j int) error {
			i := due[j]
			last[i] = time.Now()
			if _, err := b.nodes.UpdateStatus(ctx, connect.NewRequest(fakeNode(fakeNodeName(i), last[i]))); err != nil && ctx.Err() == nil {
				return fmt.Errorf("heartbeat of node %s: %w", fakeNodeName(i), err)
			}
			return nil
		})
		if err != nil && ctx.Err() == nil {
			return err
		}
	}
}

// benchHeartbeatClients is how many heartbeats a bench writes at once.
const benchHeartbeatClients = 16

// measureSchedule creates the pods and waits until a watch has seen every
// one bound. With a hold, it closes the hold once every pod is created,
// and counts placed and the latencies from then.
func (b *bench) measureSchedule(ctx context.Context, o *benchScheduleOptions, hold chan struct{}) (scheduleResult, error) {
	r := scheduleResult{nodes: o.nodes, pods: o.pods, backlog: hold != nil}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	// The watch opens first, from the store's revision now, so that it
	// sees every binding.
	list, err := b.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{Namespace: benchNamespace, FieldSelector: nowhereSelector}))
	if err != nil {
		return r, fmt.Errorf("read the store's revision: %w", err)
	}
	var mu sync.Mutex
	sent := make(map[string]time.Time, o.pods)
	bound := make(map[string]time.Time, o.pods)
	all := make(chan struct{})
	watchErr := make(chan error, 1)
	go func() {
		watchErr <- b.watchBindings(ctx, list.Msg.GetResourceVersion(), func(name string, at time.Time) {
			mu.Lock()
			defer mu.Unlock()
			if _, dup := bound[name]; dup {
				return
			}
			bound[name] = at
			if len(bound) == o.pods {
				close(all)
			}
		})
	}()
	start := time.Now()
	_, err = parallel(ctx, o.clients, o.pods, func(ctx context.Context, i int) error {
		name := b.name("sched", i)
		mu.Lock()
		sent[name] = time.Now()
		mu.Unlock()
		return b.createSchedulePod(ctx, name)
	})
	if err != nil {
		return r, err
	}
	r.created = time.Since(start)
	if hold != nil {
		b.say("created %d pods in %s; releasing the scheduler", o.pods, r.created.Round(time.Millisecond))
		mu.Lock()
		start = time.Now()
		for name := range sent {
			sent[name] = start
		}
		early := len(bound)
		mu.Unlock()
		if early > 0 {
			return r, fmt.Errorf("%d pods bound while the scheduler was held", early)
		}
		close(hold)
	}
	select {
	case <-all:
	case err := <-watchErr:
		return r, fmt.Errorf("watch the bindings: %w", err)
	case <-ctx.Done():
		mu.Lock()
		n := len(bound)
		mu.Unlock()
		return r, fmt.Errorf("%d of %d pods bound after %s: %w", n, o.pods, o.timeout, ctx.Err())
	}
	cancel()
	mu.Lock()
	defer mu.Unlock()
	lat := make(latencies, 0, o.pods)
	for name, at := range bound {
		lat = append(lat, at.Sub(sent[name]))
		if r.firstBound.IsZero() || at.Before(r.firstBound) {
			r.firstBound = at
		}
		if at.After(r.lastBound) {
			r.lastBound = at
		}
	}
	r.placed = r.lastBound.Sub(start)
	r.binding = r.lastBound.Sub(r.firstBound)
	r.p50, r.p99, r.worst = lat.percentile(0.5), lat.percentile(0.99), lat.percentile(1)
	return r, nil
}

// createSchedulePod creates one pod of the schedule bench: Wasm, asking for
// a little CPU and memory. A create whose outcome is unknown (the leader
// changed under it) is sent again; AlreadyExists then means it was made.
func (b *bench) createSchedulePod(ctx context.Context, name string) error {
	req := map[string]string{"cpu": "10m", "memory": "16Mi"}
	pod := &skiffv1.Pod{
		Metadata: &skiffv1.ObjectMeta{Name: name, Namespace: benchNamespace, Labels: map[string]string{benchLabel: b.run}},
		Spec: &skiffv1.PodSpec{RestartPolicy: "Never", RuntimeClassName: "wasm", Containers: []*skiffv1.Container{{
			Name: "bench", Image: benchImage, Resources: &skiffv1.ResourceRequirements{Requests: req},
		}}},
	}
	var err error
	for try := 0; try < 5; try++ {
		_, err = b.pods.Create(ctx, connect.NewRequest(pod))
		if try > 0 && connect.CodeOf(err) == connect.CodeAlreadyExists {
			return nil
		}
		if connect.CodeOf(err) != connect.CodeUnavailable {
			break
		}
		b.say("create pod %s: %v; sending it again", name, err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	if err != nil {
		return fmt.Errorf("create pod %s/%s: %w", benchNamespace, name, err)
	}
	return nil
}

// watchBindings watches the bench's pods from rev and calls bound with
// the name and the time of each event that shows a pod bound, until ctx
// ends. A watch that breaks is opened again from the last version seen;
// when that version is too old (the watch fell far behind), the pods are
// listed, each bound one counted as bound when the listing is read, and
// watched again from the listing's version.
func (b *bench) watchBindings(ctx context.Context, rev uint64, bound func(name string, at time.Time)) error {
	sel := benchLabel + "=" + b.run
	for {
		st, err := b.pods.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{
			Namespace: benchNamespace, LabelSelector: sel, ResourceVersion: rev, AllowBookmarks: true,
		}))
		if err != nil {
			return err
		}
		for st.Receive() {
			ev := st.Msg()
			rev = max(rev, ev.GetObject().GetMetadata().GetResourceVersion())
			if p := ev.GetObject(); p.GetSpec().GetNodeName() != "" {
				bound(p.GetMetadata().GetName(), time.Now())
			}
		}
		err = errors.Join(st.Err(), st.Close())
		if ctx.Err() != nil {
			return nil
		}
		switch connect.CodeOf(err) {
		case connect.CodeUnavailable:
			b.say("the watch broke (%v); watching again from %d", err, rev)
		case connect.CodeOutOfRange:
			b.say("the watch expired (%v); listing the pods", err)
			list, err := b.listBenchPods(ctx, sel)
			if err != nil {
				return err
			}
			listed := time.Now()
			for _, p := range list.Msg.GetItems() {
				if p.GetSpec().GetNodeName() != "" {
					bound(p.GetMetadata().GetName(), boundAt(p, listed))
				}
			}
			rev = list.Msg.GetResourceVersion()
		default:
			return err
		}
	}
}

// boundAt is when a listed pod was bound: the time of its PodScheduled
// condition (the servers run in this process, on this clock), or listed
// when it has none.
func boundAt(p *skiffv1.Pod, listed time.Time) time.Time {
	for _, c := range p.GetStatus().GetConditions() {
		if c.GetType() == "PodScheduled" && c.GetStatus() == "True" && c.GetLastTransitionTime() != nil {
			if at := c.GetLastTransitionTime().AsTime(); at.Before(listed) {
				return at
			}
		}
	}
	return listed
}

// listBenchPods lists the bench's pods, again after a pause while the
// cluster has no leader to answer.
func (b *bench) listBenchPods(ctx context.Context, sel string) (*connect.Response[skiffv1.PodList], error) {
	for {
		list, err := b.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{Namespace: benchNamespace, LabelSelector: sel}))
		if connect.CodeOf(err) != connect.CodeUnavailable {
			if err != nil {
				return nil, fmt.Errorf("list the pods: %w", err)
			}
			return list, nil
		}
		b.say("list the pods: %v; listing them again", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("list the pods: %w", ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

func printSchedule(out io.Writer, r scheduleResult) {
	rate := func(n int, d time.Duration) string {
		if d <= 0 {
			return "-"
		}
		return strconv.FormatFloat(float64(n)/d.Seconds(), 'f', 0, 64)
	}
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "SCHEDULE\tNODES\tPODS\tTOOK\tPODS/S\n")
	fmt.Fprintf(tw, "created\t%d\t%d\t%s\t%s\n", r.nodes, r.pods, ms(r.created), rate(r.pods, r.created))
	fmt.Fprintf(tw, "placed\t%d\t%d\t%s\t%s\n", r.nodes, r.pods, ms(r.placed), rate(r.pods, r.placed))
	fmt.Fprintf(tw, "binding\t%d\t%d\t%s\t%s\n", r.nodes, r.pods, ms(r.binding), rate(r.pods, r.binding))
	tw.Flush()
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "LATENCY\tP50\tP99\tMAX\n")
	from := "create→bound"
	if r.backlog {
		from = "release→bound"
	}
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", from, ms(r.p50), ms(r.p99), ms(r.worst))
	tw.Flush()
}
