package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sync/errgroup"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

// burstResult is what the burst measurement saw.
type burstResult struct {
	pods                 int
	created, succeeded   time.Duration // first create to last create answered, to last Succeeded
	scheduled, completed latencies     // create sent to bound, to Succeeded, as a watch saw each
	// cpu is the CPU time the process (server, node and the bench's
	// clients) used from the first create to the last Succeeded: a figure
	// that holds better than the times on a busy machine.
	cpu time.Duration
}

// measureBurst creates n pods whose container exits at once (the module
// compiled already), from 16 clients at a time, and follows them with a watch until every one has
// Succeeded; then it deletes them. profile, when set, receives a CPU
// profile of the burst.
func (b *benchNode) measureBurst(ctx context.Context, n int, profile string) (burstResult, error) {
	r := burstResult{pods: n}
	// One pod first, so that the module is compiled (once per node) before
	// the burst, as on a node that has run it before.
	if _, err := b.measureExits(ctx, 1); err != nil {
		return r, err
	}
	b.say("creating %d pods that exit at once, 16 at a time", n)
	list, err := b.api.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{Namespace: "default", FieldSelector: nowhereSelector}))
	if err != nil {
		return r, err
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	st, err := b.api.watching(kinds.Pod).Watch(wctx, &skiffv1.WatchRequest{Namespace: "default", ResourceVersion: list.Msg.GetResourceVersion()})
	if err != nil {
		return r, err
	}
	defer st.Close()
	profileDone := func() {}
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return r, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return r, err
		}
		// Until the last pod has Succeeded, not through their deletion.
		stopProfile := sync.OnceFunc(pprof.StopCPUProfile)
		defer stopProfile()
		profileDone = stopProfile
	}
	var mu sync.Mutex
	sent := map[string]time.Time{}
	cpu0, err := selfCPU()
	if err != nil {
		return r, err
	}
	start := time.Now()
	created := make(chan error, 1)
	go func() {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(16)
		for i := range n {
			name := fmt.Sprintf("burst-%d", i)
			g.Go(func() error {
				mu.Lock()
				sent[name] = time.Now()
				mu.Unlock()
				_, err := b.api.pods.Create(gctx, connect.NewRequest(benchPod(name, "exit", "0")))
				return err
			})
		}
		err := g.Wait()
		mu.Lock()
		r.created = time.Since(start)
		mu.Unlock()
		if err != nil {
			stopWatch() // the watch waits for pods that will never come
		}
		created <- err
	}()
	bound, done := map[string]time.Time{}, map[string]time.Time{}
	for len(done) < n {
		if !st.Receive() {
			select {
			case err := <-created:
				if err != nil {
					return r, fmt.Errorf("create the burst's pods: %w", err)
				}
			default:
			}
			return r, fmt.Errorf("watch the burst: %w", errors.Join(st.Err(), ctx.Err()))
		}
		seen := time.Now()
		_, obj := st.Event()
		p, ok := obj.(*skiffv1.Pod)
		if !ok || !strings.HasPrefix(p.GetMetadata().GetName(), "burst-") {
			continue
		}
		name := p.GetMetadata().GetName()
		if _, ok := bound[name]; !ok && p.GetSpec().GetNodeName() != "" {
			bound[name] = seen
		}
		switch p.GetStatus().GetPhase() {
		case "Succeeded":
			if _, ok := done[name]; !ok {
				done[name] = seen
			}
		case "Failed":
			return r, fmt.Errorf("pod %s failed: %s", name, p.GetStatus().GetMessage())
		}
	}
	last := time.Time{}
	for _, t := range done {
		if t.After(last) {
			last = t
		}
	}
	r.succeeded = last.Sub(start)
	profileDone()
	cpu1, err := selfCPU()
	if err != nil {
		return r, err
	}
	r.cpu = cpu1 - cpu0
	if err := <-created; err != nil {
		return r, err
	}
	mu.Lock()
	for name, t := range done {
		r.completed = append(r.completed, t.Sub(sent[name]))
		r.scheduled = append(r.scheduled, bound[name].Sub(sent[name]))
	}
	mu.Unlock()
	b.say("deleting the burst's pods")
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range n {
		g.Go(func() error {
			_, err := b.api.pods.Delete(gctx, connect.NewRequest(&skiffv1.DeleteRequest{Namespace: "default", Name: fmt.Sprintf("burst-%d", i)}))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return r, err
	}
	return r, b.waitPods(ctx, 0, func(*skiffv1.Pod) bool { return true })
}

func printBurst(out io.Writer, r burstResult) {
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "BURST\tPODS\tCREATED\tALL SUCCEEDED\tPODS/S\tSCHEDULED P50\tP99\tSUCCEEDED P50\tP99\tCPU\tCPU PER POD")
	fmt.Fprintf(tw, "exit at once\t%d\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\n", r.pods, ms(r.created), ms(r.succeeded), float64(r.pods)/r.succeeded.Seconds(),
		ms(r.scheduled.percentile(0.5)), ms(r.scheduled.percentile(0.99)), ms(r.completed.percentile(0.5)), ms(r.completed.percentile(0.99)),
		ms(r.cpu), ms(r.cpu/time.Duration(max(r.pods, 1))))
	_ = tw.Flush()
	fmt.Fprintln(out)
}
