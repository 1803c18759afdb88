package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"skiff.dev/skiff/control/api/apitest"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"skiff.dev/skiff/control/api/events"
	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

// markDeleted sets p's deletion as the apiserver does for a graceful
// delete: at is when the grace period ends.
func markDeleted(p *skiffv1.Pod, at time.Time, grace int64) {
	p.Metadata.DeletionTimestamp = timestamppb.New(at)
	p.Metadata.DeletionGracePeriodSeconds = proto.Int64(grace)
}

// fakeEvents records the events written through it. Safe for concurrent
// use.
type fakeEvents struct {
	skiffv1connect.EventServiceClient
	mu     sync.Mutex
	events []*skiffv1.Event
}

func (f *fakeEvents) Create(_ context.Context, r *connect.Request[skiffv1.Event]) (*connect.Response[skiffv1.Event], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, proto.Clone(r.Msg).(*skiffv1.Event))
	return connect.NewResponse(r.Msg), nil
}

// seen returns "reason: message" of the events written so far.
func (f *fakeEvents) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, e := range f.events {
		out = append(out, e.Reason+": "+e.Message)
	}
	return out
}

// recordEvents gives the worker's agent a recorder writing to a fake and
// runs it. The returned func waits until everything recorded so far is
// written, stops the recorder and returns what it wrote.
func recordEvents(t *testing.T, w *podWorker) func() []string {
	t.Helper()
	evs := &fakeEvents{}
	w.a.events = events.NewRecorder(events.Config{Events: evs, Component: "agent", Host: "n", Now: w.a.now})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		w.a.events.Run(ctx)
	}()
	stop := func() { cancel(); <-stopped }
	t.Cleanup(stop)
	return func() []string {
		// The recorder writes in order: once a last event is written, so
		// is every one before it.
		w.a.events.Record(w.pod, events.Normal, "TestEnd", "end")
		eventually(t, 5*time.Second, func() bool { return slices.Contains(evs.seen(), "TestEnd: end") },
			func() string { return fmt.Sprintf("events written: %q", evs.seen()) })
		stop()
		got := evs.seen()
		return got[:len(got)-1]
	}
}

// eventually is the shared wait of the tests that speak the API.
var eventually = apitest.Eventually

// TestTerminate: a pod being deleted has its running containers stopped
// with what is left of its grace period, reports how they ended, loses its
// sandbox and then confirms its deletion, in that order.
func TestTerminate(t *testing.T) {
	tests := []struct {
		name        string
		deleteAt    time.Duration // from now
		grace       int64
		stopExit    int32 // how the running container ends
		wantTimeout int64
		wantPhase   string
	}{
		{name: "whole grace left", deleteAt: 30 * time.Second, grace: 30, stopExit: 137, wantTimeout: 30, wantPhase: "Failed"},
		{name: "part of a second left rounds up", deleteAt: 12*time.Second + 300*time.Millisecond, grace: 30, stopExit: 137, wantTimeout: 13, wantPhase: "Failed"},
		{name: "exits by itself", deleteAt: 30 * time.Second, grace: 30, stopExit: 0, wantTimeout: 30, wantPhase: "Succeeded"},
		{name: "no more than the grace period", deleteAt: time.Hour, grace: 30, stopExit: 137, wantTimeout: 30, wantPhase: "Failed"},
		{name: "grace period over", deleteAt: -5 * time.Second, grace: 30, stopExit: 137, wantTimeout: 0, wantPhase: "Failed"},
		{name: "deleted at once", deleteAt: 0, grace: 0, stopExit: 137, wantTimeout: 0, wantPhase: "Failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Container c runs; container done has exited 0 and, under
			// OnFailure, stays exited.
			w, cri, now := newTestWorker(t, "OnFailure")
			w.pod.Spec.Containers = append(w.pod.Spec.Containers, &skiffv1.Container{Name: "done", Image: "hello"})
			ctx := context.Background()
			w.sync(ctx)
			cri.exitContainer("c2", 0)
			w.sync(ctx)
			if c, d := w.containers["c"], w.containers["done"]; c.state.GetRunning() == nil || d.state.GetTerminated().GetExitCode() != 0 {
				t.Fatalf("before the deletion: c %v, done %v; want c running and done exited 0", c.state, d.state)
			}
			pods := newFakePods(w, cri)
			markDeleted(w.pod, now.Add(tt.deleteAt), tt.grace)
			markDeleted(pods.pod, now.Add(tt.deleteAt), tt.grace)
			written := recordEvents(t, w)
			cri.stopExit = tt.stopExit
			cri.calls.reset()

			w.terminate(ctx)

			want := []string{
				fmt.Sprintf("StopContainer c1 timeout=%d", tt.wantTimeout),
				"UpdateStatus " + tt.wantPhase,
				"StopPodSandbox sb0",
				"RemovePodSandbox sb0",
				"Delete default/p uid=u1 grace=0",
			}
			if got := cri.calls.get(); !slices.Equal(got, want) {
				t.Errorf("calls\n %q\nwant\n %q", got, want)
			}
			st := pods.lastStatus()
			if len(st.GetContainerStatuses()) != 2 {
				t.Fatalf("final status %v, want both containers", st)
			}
			for i, wantExit := range []int32{tt.stopExit, 0} {
				cs := st.ContainerStatuses[i]
				if cs.State.GetTerminated() == nil || cs.State.GetTerminated().GetExitCode() != wantExit {
					t.Errorf("final state of %s %v, want terminated with exit code %d", cs.Name, cs.State, wantExit)
				}
			}
			if got := written(); !slices.Equal(got, []string{"Killing: Stopping container c"}) {
				t.Errorf("events %q, want one Killing for the running container", got)
			}
			if !w.confirmed || w.interval() != never {
				t.Errorf("confirmed %v, next look in %s; want confirmed, and no look until woken", w.confirmed, w.interval())
			}
			// Once confirmed, the worker waits for the pod to go.
			cri.calls.reset()
			w.terminate(ctx)
			if got := cri.calls.get(); len(got) != 0 {
				t.Errorf("a confirmed worker called %q", got)
			}
		})
	}
}

// TestTerminateConfirmation: the deletion counts as confirmed when the API
// took it or the pod is already gone (or replaced: a newer pod of the name
// has another uid); otherwise the worker tries again a second later, without
// stopping anything twice.
func TestTerminateConfirmation(t *testing.T) {
	tests := []struct {
		name          string
		err           error
		wantConfirmed bool
	}{
		{"taken", nil, true},
		{"pod gone", connect.NewError(connect.CodeNotFound, errors.New("pods \"p\" not found")), true},
		{"pod replaced", connect.NewError(connect.CodeAborted, errors.New("uid precondition failed")), true},
		{"API unavailable", connect.NewError(connect.CodeUnavailable, errors.New("no leader")), false},
		{"deadline", connect.NewError(connect.CodeDeadlineExceeded, errors.New("timeout")), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, cri, now := newTestWorker(t, "Always")
			ctx := context.Background()
			w.sync(ctx)
			pods := newFakePods(w, cri)
			pods.deleteErrs = []error{tt.err}
			markDeleted(w.pod, now.Add(30*time.Second), 30)
			w.terminate(ctx)
			if w.confirmed != tt.wantConfirmed {
				t.Fatalf("confirmed %v after Delete answered %v, want %v", w.confirmed, tt.err, tt.wantConfirmed)
			}
			if tt.wantConfirmed {
				return
			}
			if got := w.interval(); got != time.Second {
				t.Errorf("retry in %s, want 1s", got)
			}
			cri.calls.reset()
			w.terminate(ctx)
			if got, want := cri.calls.get(), []string{"Delete default/p uid=u1 grace=0"}; !slices.Equal(got, want) {
				t.Errorf("retry calls %q, want only %q", got, want)
			}
			if !w.confirmed {
				t.Errorf("not confirmed after the API took the retry")
			}
		})
	}
}

// TestTerminatingPodIsNeverRestarted drives the worker's own loop: its
// container, under restartPolicy Always, is stopped and not created again,
// the failed confirmation is retried on the next run, and the worker goes
// when the pod does.
func TestTerminatingPodIsNeverRestarted(t *testing.T) {
	w, cri, now := newTestWorker(t, "Always")
	pods := newFakePods(w, cri)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); <-w.done })
	w.sync(ctx)
	w.report(ctx)
	if got := pods.pod.GetStatus().GetPhase(); got != "Running" {
		t.Fatalf("phase %s before the deletion, want Running", got)
	}
	p := proto.Clone(w.pod).(*skiffv1.Pod)
	markDeleted(p, now.Add(30*time.Second), 30)
	markDeleted(pods.pod, now.Add(30*time.Second), 30)
	pods.deleteErrs = []error{connect.NewError(connect.CodeUnavailable, errors.New("no leader"))}
	cri.calls.reset()

	w.update(p, false)
	<-w.wake // the retry must come from the worker's own timer, not a wake-up
	go w.run(ctx)
	eventually(t, 5*time.Second, func() bool { return pods.deleteCount() == 2 },
		func() string {
			return fmt.Sprintf("%d Deletes, want a retry after the first failed; calls %q", pods.deleteCount(), cri.calls.get())
		})
	w.update(nil, true) // the API removed the pod
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the worker did not end when its pod was removed")
	}

	want := []string{
		"StopContainer c1 timeout=30",
		"UpdateStatus Failed",
		"StopPodSandbox sb0",
		"RemovePodSandbox sb0",
		"Delete default/p uid=u1 grace=0",
		"Delete default/p uid=u1 grace=0",
	}
	if got := cri.calls.get(); !slices.Equal(got, want) {
		t.Errorf("calls\n %q\nwant\n %q", got, want)
	}
	if !w.confirmed || len(cri.creates) != 1 || len(cri.sandboxes) != 0 {
		t.Errorf("confirmed %v, %d containers created, %d sandboxes left; want confirmed, 1, 0", w.confirmed, len(cri.creates), len(cri.sandboxes))
	}
	cs := pods.lastStatus().GetContainerStatuses()
	if len(cs) != 1 || cs[0].State.GetTerminated().GetExitCode() != 137 || cs[0].GetRestartCount() != 0 {
		t.Errorf("final container status %v, want terminated 137, never restarted", cs)
	}
}

// TestTerminateAfterAgentRestart: a worker new to a terminating pod (the
// agent restarted) finds its sandbox and stops the container it runs.
func TestTerminateAfterAgentRestart(t *testing.T) {
	before, cri, now := newTestWorker(t, "Always")
	ctx := context.Background()
	before.sync(ctx)

	p := proto.Clone(before.pod).(*skiffv1.Pod)
	markDeleted(p, now.Add(20*time.Second), 30)
	w := newPodWorker(before.a, p)
	w.pod, _ = w.take()
	pods := newFakePods(w, cri)
	cri.calls.reset()
	w.terminate(ctx)

	want := []string{
		"StopContainer c1 timeout=20",
		"UpdateStatus Failed",
		"StopPodSandbox sb0",
		"RemovePodSandbox sb0",
		"Delete default/p uid=u1 grace=0",
	}
	if got := cri.calls.get(); !slices.Equal(got, want) {
		t.Errorf("calls\n %q\nwant\n %q", got, want)
	}
	if cs := pods.lastStatus().GetContainerStatuses(); len(cs) != 1 || cs[0].State.GetTerminated().GetExitCode() != 137 {
		t.Errorf("final container status %v, want terminated 137", cs)
	}
}

// TestEvictedWhileAway: a pod evicted while its agent was down (its grace
// long over by the time the agent is back) is stopped and its deletion
// confirmed by a worker new to it, through the worker's own loop, and is
// never run again: no sandbox or container is made or started for it.
func TestEvictedWhileAway(t *testing.T) {
	before, cri, now := newTestWorker(t, "Always")
	ctx, cancel := context.WithCancel(context.Background())
	before.sync(ctx)

	p := proto.Clone(before.pod).(*skiffv1.Pod)
	markDeleted(p, now.Add(-time.Minute), 5) // evicted a minute ago, grace 5s
	w := newPodWorker(before.a, p)
	pods := newFakePods(w, cri)
	pods.pod = proto.Clone(p).(*skiffv1.Pod)
	cri.calls.reset()
	t.Cleanup(func() { cancel(); <-w.done })
	go w.run(ctx)
	eventually(t, 5*time.Second, func() bool { return pods.deleteCount() == 1 },
		func() string { return fmt.Sprintf("no confirmation; calls %q", cri.calls.get()) })
	w.update(nil, true) // the API removed the pod
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the worker did not end when its pod was removed")
	}
	want := []string{
		"StopContainer c1 timeout=0",
		"UpdateStatus Failed",
		"StopPodSandbox sb0",
		"RemovePodSandbox sb0",
		"Delete default/p uid=u1 grace=0",
	}
	if got := cri.calls.get(); !slices.Equal(got, want) {
		t.Errorf("calls\n %q\nwant\n %q", got, want)
	}
	if len(cri.creates) != 1 || len(cri.sandboxes) != 0 {
		t.Errorf("%d containers created (1 before the agent went), %d sandboxes left; want 1, 0", len(cri.creates), len(cri.sandboxes))
	}
}
