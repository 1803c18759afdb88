package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
	"skiff.dev/skiff/control/server"
	"skiff.dev/skiff/node"
	"skiff.dev/skiff/runtime/image"
	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

// benchNodeOptions are skiff bench node's flags.
type benchNodeOptions struct {
	module string
	pods   int
	starts int
	exits  int
	burst  int
	// only, when set, names the one measurement to run.
	only string
	idle time.Duration
	// cpuprofile, when set, receives a CPU profile of the idle window;
	// burstProfile one of the burst.
	cpuprofile, burstProfile string
}

// benchNodeSections are the measurements of skiff bench node, in order.
var benchNodeSections = []string{"start", "exit", "burst", "density"}

func newBenchNodeCmd() *cobra.Command {
	o := &benchNodeOptions{}
	cmd := &cobra.Command{
		Use:   "node --module FILE.wasm",
		Short: "Measure one node: Wasm pod start through CRI, exit-to-status latency, and density",
		Long: `Bench node starts a server and a node in this process, with their state in a
temporary directory (removed afterwards), and measures:

  start     RunPodSandbox + CreateContainer + StartContainer over the node's
            CRI socket, p50 and p99, and CreateContainer + StartContainer
            alone (no network namespace): "cold" with a module never seen
            (it is compiled), "cached" with one already compiled.
  exit      the time from a container's exit (its finishedAt) to the watch
            event that shows its pod Succeeded, p50 and p99.
  burst     --burst pods whose container exits at once (its module compiled
            by one pod before), created through the API 16 at a time: the time from the first create to the last
            pod Succeeded (and pods/s over it), and for each pod the time
            from its create to the watch event showing it bound, and
            showing it Succeeded, p50 and p99; and the CPU time the
            process used over the burst, in all and per pod (a figure
            that holds better than the times on a busy machine).
  density   --pods long-running pods created through the API: the time until
            all are Running, the process's resident memory and its growth per
            pod, the modules' own linear memory per pod (as CRI stats report
            it: the size, of which the guest may have touched less), how long
            the store takes to settle after the last start (the starts'
            events are written at the recorder's 50/s), its CPU use while
            the pods then idle (--idle), and the time until all are deleted.

FILE is a WASI module that takes the arguments "sleep DURATION" and "exit N"
(the test guest: go tool task bench-node builds it). It needs root: each pod
gets its own network namespace.`,
		Example: `  GOOS=wasip1 GOARCH=wasm go build -o /tmp/guest.wasm ./runtime/wasm/testdata/guest
  skiff bench node --module /tmp/guest.wasm --pods 1000
  skiff bench node --module /tmp/guest.wasm --only burst --burst 500`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			if os.Geteuid() != 0 {
				return errors.New("skiff bench node needs root: every pod gets its own network namespace")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runBenchNode(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.module, "module", "", "the WASI module to run (required)")
	f.IntVar(&o.pods, "pods", 1000, "long-running pods of the density measurement")
	f.IntVar(&o.starts, "starts", 200, "pod starts of each start measurement")
	f.IntVar(&o.exits, "exits", 100, "pods of the exit measurement")
	f.IntVar(&o.burst, "burst", 500, "pods of the burst measurement")
	f.StringVar(&o.only, "only", "", "run only this measurement: "+strings.Join(benchNodeSections, ", "))
	f.DurationVar(&o.idle, "idle", 10*time.Second, "how long CPU use is measured while the pods idle")
	f.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the idle window to FILE")
	_ = f.MarkHidden("cpuprofile")
	f.StringVar(&o.burstProfile, "burst-cpuprofile", "", "write a CPU profile of the burst (first create to last Succeeded) to FILE")
	return cmd
}

// runs reports whether the run measures section.
func (o *benchNodeOptions) runs(section string) bool { return o.only == "" || o.only == section }

func (o *benchNodeOptions) validate() error {
	if o.only != "" && !slices.Contains(benchNodeSections, o.only) {
		return fmt.Errorf("--only: unsupported value %q: supported values are %s", o.only, strings.Join(benchNodeSections, ", "))
	}
	if o.module == "" {
		return errors.New("--module: required value: a WASI module that takes \"sleep DURATION\" and \"exit N\"")
	}
	if _, err := os.Stat(o.module); err != nil {
		return fmt.Errorf("--module: %w", err)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"pods", o.pods}, {"starts", o.starts}, {"exits", o.exits}, {"burst", o.burst}} {
		if f.v < 1 {
			return fmt.Errorf("--%s: invalid value \"%d\": must be 1 or more", f.name, f.v)
		}
	}
	if o.idle < time.Second {
		return fmt.Errorf("--idle: invalid value %s: must be 1s or more", o.idle)
	}
	return nil
}

// benchNode is the server and node of one skiff bench node run.
type benchNode struct {
	dir    string
	images *image.Store
	cri    runtimeapi.RuntimeServiceClient
	api    *clients
	module []byte
	say    func(format string, args ...any)
}

func runBenchNode(ctx context.Context, out, progress io.Writer, o *benchNodeOptions) (err error) {
	module, err := os.ReadFile(o.module)
	if err != nil {
		return fmt.Errorf("--module: %w", err)
	}
	dir, err := os.MkdirTemp("", "skiff-bench-node-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	log := slog.New(slog.NewTextHandler(progress, &slog.HandlerOptions{Level: slog.LevelError}))
	srv, err := server.New(server.Config{DataDir: filepath.Join(dir, "data"), Listen: "127.0.0.1:0", Logger: log})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	defer func() { cancel(); err = errors.Join(err, g.Wait()) }()
	g.Go(func() error { return srv.Run(gctx) })
	select {
	case <-srv.Ready():
	case <-gctx.Done():
		return errors.New("the bench's server stopped before it was ready")
	}
	socket := filepath.Join(dir, "cri.sock")
	n, err := node.New(node.Config{
		Name: "bench", Server: srv.InternalAddr(), Token: srv.JoinToken(), DataDir: filepath.Join(dir, "data"),
		StateDir: filepath.Join(dir, "state"), CRISocket: socket, AgentListen: "127.0.0.1:0", Logger: log,
		// Room for every pod the density measurement starts, and more.
		MaxPods: o.pods + o.exits + o.burst + 100,
		// Loopback only (Network's zero value): the bench measures the
		// runtime, and leaves no bridge or rule in the machine's
		// namespace (CNI setup is measured by cri's
		// BenchmarkPodNetworkSetup).
	})
	if err != nil {
		return err
	}
	g.Go(func() error { return n.Run(gctx) })
	select {
	case <-n.Ready():
	case <-gctx.Done():
		return errors.New("the bench's node stopped before it was ready")
	}
	a := srv.Admin()
	api, err := newClients(clientConfig{Server: a.Server, Token: a.Token, CA: string(a.CA)})
	if err != nil {
		return err
	}
	images, err := image.Open(node.ImageDir(filepath.Join(dir, "data")))
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	b := &benchNode{dir: dir, images: images, cri: runtimeapi.NewRuntimeServiceClient(conn), api: api, module: module,
		say: func(format string, args ...any) { fmt.Fprintf(progress, "bench: "+format+"\n", args...) }}
	if _, err := images.Import(ctx, "bench", bytes.NewReader(module)); err != nil {
		return err
	}
	fmt.Fprintf(out, "target: in-process server and node, data in %s (removed afterwards)\nmodule: %s (%d bytes)\n\n", dir, o.module, len(module))

	if o.runs("start") {
		tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "START\tRUNS\tP50\tP99\tCONTAINER ALONE P50\tP99")
		for _, cold := range []bool{true, false} {
			d, c, err := b.measureStarts(ctx, o.starts, cold)
			if err != nil {
				return err
			}
			name := map[bool]string{true: "cold", false: "cached"}[cold]
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", name, len(d), ms(latencies(d).percentile(0.5)), ms(latencies(d).percentile(0.99)),
				ms(latencies(c).percentile(0.5)), ms(latencies(c).percentile(0.99)))
		}
		_ = tw.Flush()
		fmt.Fprintln(out)
	}
	if o.runs("exit") {
		exits, err := b.measureExits(ctx, o.exits)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "EXIT TO STATUS\tPODS\tP50\tP99")
		fmt.Fprintf(tw, "Succeeded\t%d\t%s\t%s\n", len(exits), ms(latencies(exits).percentile(0.5)), ms(latencies(exits).percentile(0.99)))
		_ = tw.Flush()
		fmt.Fprintln(out)
	}
	if o.runs("burst") {
		r, err := b.measureBurst(ctx, o.burst, o.burstProfile)
		if err != nil {
			return err
		}
		printBurst(out, r)
	}
	if o.runs("density") {
		return b.measureDensity(ctx, out, o)
	}
	return nil
}

// measureStarts starts and removes n pods through CRI, each with one
// container that sleeps, and returns how long each start took.
func (b *benchNode) measureStarts(ctx context.Context, n int, cold bool) (pods, containers []time.Duration, err error) {
	b.say("starting %d pods through CRI (cold: %v)", n, cold)
	var out, ctrs []time.Duration
	for i := range n {
		img := "bench"
		if cold {
			img = fmt.Sprintf("bench-cold-%d", i)
			if _, err := b.images.Import(ctx, img, bytes.NewReader(wasmtest.WithCustomSection(b.module, img))); err != nil {
				return nil, nil, err
			}
		}
		name := fmt.Sprintf("start-%v-%d", cold, i)
		t0 := time.Now()
		pod, err := b.cri.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
			Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "bench", Uid: name},
			LogDirectory: filepath.Join(b.dir, "cri-logs", name),
		}})
		if err != nil {
			return nil, nil, fmt.Errorf("run pod sandbox: %w", err)
		}
		t1 := time.Now()
		ctr, err := b.cri.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod.PodSandboxId, Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Image: &runtimeapi.ImageSpec{Image: img},
			Args: []string{"sleep", "1h"}, LogPath: "c.log",
		}})
		if err == nil {
			_, err = b.cri.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctr.ContainerId})
		}
		if err != nil {
			return nil, nil, fmt.Errorf("start a container: %w", err)
		}
		out, ctrs = append(out, time.Since(t0)), append(ctrs, time.Since(t1))
		if _, err := b.cri.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.PodSandboxId}); err != nil {
			return nil, nil, err
		}
		if _, err := b.cri.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.PodSandboxId}); err != nil {
			return nil, nil, err
		}
		if cold {
			if err := b.images.Remove(img); err != nil {
				return nil, nil, err
			}
		}
	}
	return out, ctrs, nil
}

// measureExits creates n pods whose container exits at once, one after
// the other, and returns for each the time from the container's exit (its
// finishedAt) to the watch event that shows its pod Succeeded.
func (b *benchNode) measureExits(ctx context.Context, n int) ([]time.Duration, error) {
	b.say("running %d pods that exit at once", n)
	pods := b.api.pods
	var out []time.Duration
	for i := range n {
		name := fmt.Sprintf("exit-%d", i)
		created, err := pods.Create(ctx, connect.NewRequest(benchPod(name, "exit", "0")))
		if err != nil {
			return nil, err
		}
		st, err := b.api.watching(kinds.Pod).Watch(ctx, &skiffv1.WatchRequest{
			Namespace: "default", FieldSelector: "metadata.name=" + name, ResourceVersion: created.Msg.GetMetadata().GetResourceVersion(),
		})
		if err != nil {
			return nil, err
		}
		var d time.Duration
		for d == 0 {
			if !st.Receive() {
				err := st.Err()
				st.Close()
				return nil, fmt.Errorf("watch pod %s: %w", name, err)
			}
			seen := time.Now()
			_, obj := st.Event()
			p, ok := obj.(*skiffv1.Pod)
			if !ok {
				continue
			}
			switch p.GetStatus().GetPhase() {
			case "Succeeded":
				for _, cs := range p.GetStatus().GetContainerStatuses() {
					if t := cs.GetState().GetTerminated(); t != nil && t.GetFinishedAt() != nil {
						d = seen.Sub(t.GetFinishedAt().AsTime())
					}
				}
			case "Failed":
				st.Close()
				return nil, fmt.Errorf("pod %s failed: %s", name, p.GetStatus().GetMessage())
			}
		}
		st.Close()
		out = append(out, d)
		if _, err := pods.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Namespace: "default", Name: name})); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// measureDensity starts o.pods long-running pods through the API and
// prints how long they took, the memory they hold, the CPU they use at
// idle, and how long deleting them takes.
func (b *benchNode) measureDensity(ctx context.Context, out io.Writer, o *benchNodeOptions) error {
	if err := b.waitPods(ctx, 0, func(*skiffv1.Pod) bool { return true }); err != nil {
		return err
	}
	rss0, err := selfRSS()
	if err != nil {
		return err
	}
	b.say("creating %d long-running pods", o.pods)
	t0 := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range o.pods {
		g.Go(func() error {
			_, err := b.api.pods.Create(gctx, connect.NewRequest(benchPod(fmt.Sprintf("idle-%d", i), "sleep", "1h")))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := b.waitPods(ctx, o.pods, func(p *skiffv1.Pod) bool { return p.GetStatus().GetPhase() == "Running" }); err != nil {
		return err
	}
	running := time.Since(t0)
	rss1, err := selfRSS()
	if err != nil {
		return err
	}
	// The modules' own memory, as CRI reports it: their linear memories.
	var linear uint64
	stats, err := b.cri.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
	if err != nil {
		return err
	}
	for _, st := range stats.GetStats() {
		linear += st.GetMemory().GetWorkingSetBytes().GetValue()
	}
	// Idle means idle: the events of the starts (rate-limited, as the
	// kubelet's) and the last status writes are written first.
	b.say("waiting for the store to settle")
	settleStart := time.Now()
	if err := settleStore(ctx, skiffv1connect.NewNodeServiceClient(b.api.hc, b.api.base), b.say); err != nil {
		return err
	}
	settled := time.Since(settleStart)
	b.say("measuring CPU at idle for %s", o.idle)
	cpu0, err := selfCPU()
	if err != nil {
		return err
	}
	w0 := time.Now()
	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	select {
	case <-time.After(o.idle):
	case <-ctx.Done():
		return ctx.Err()
	}
	if o.cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	cpu1, err := selfCPU()
	if err != nil {
		return err
	}
	idle := float64(cpu1-cpu0) / float64(time.Since(w0)) * 100
	b.say("deleting the pods")
	t1 := time.Now()
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range o.pods {
		g.Go(func() error {
			_, err := b.api.pods.Delete(gctx, connect.NewRequest(&skiffv1.DeleteRequest{Namespace: "default", Name: fmt.Sprintf("idle-%d", i)}))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := b.waitPods(ctx, 0, func(*skiffv1.Pod) bool { return true }); err != nil {
		return err
	}
	deleted := time.Since(t1)
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "DENSITY\tPODS\tALL RUNNING\tRSS\tRSS PER POD\tLINEAR MEMORY PER POD\tSETTLED AFTER\tIDLE CPU\tALL DELETED")
	fmt.Fprintf(tw, "sleep 1h\t%d\t%s\t%d MiB\t%d KiB\t%d KiB\t%s\t%.1f%% of a core\t%s\n", o.pods, running.Round(time.Millisecond),
		rss1>>20, (rss1-rss0)/int64(o.pods)>>10, linear/uint64(o.pods)>>10, settled.Round(time.Millisecond), idle, deleted.Round(time.Millisecond))
	return tw.Flush()
}

// waitPods waits until the default namespace holds n pods, each passing ok.
func (b *benchNode) waitPods(ctx context.Context, n int, ok func(*skiffv1.Pod) bool) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		res, err := b.api.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{Namespace: "default"}))
		if err == nil {
			good := 0
			for _, p := range res.Msg.GetItems() {
				if ok(p) {
					good++
				}
			}
			if len(res.Msg.GetItems()) == n && good == n {
				return nil
			}
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("wait for %d pods: %w", n, ctx.Err())
		}
	}
}

func benchPod(name string, args ...string) *skiffv1.Pod {
	return &skiffv1.Pod{
		Metadata: &skiffv1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: &skiffv1.PodSpec{RestartPolicy: "Never", Containers: []*skiffv1.Container{{
			Name: "c", Image: "bench", Args: args,
		}}},
	}
}

// selfRSS is this process's resident memory in bytes.
func selfRSS() (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc/self/status")
}

// selfCPU is the CPU time this process has used (user and system).
func selfCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
