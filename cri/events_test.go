package cri

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

// subscribe opens a GetContainerEvents stream and returns once the server
// has subscribed it (its header arrived).
func (e *env) subscribe(ctx context.Context) runtime.RuntimeService_GetContainerEventsClient {
	e.t.Helper()
	st, err := e.rs.GetContainerEvents(ctx, &runtime.GetEventsRequest{})
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := st.Header(); err != nil {
		e.t.Fatal(err)
	}
	return st
}

// TestContainerEvents: a subscriber sees a Wasm container created, started,
// stopped (when it exits by itself) and deleted, in that order, each event
// with its pod sandbox's status and the container's status at that point.
func TestContainerEvents(t *testing.T) {
	e := newEnv(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.importImage("quick", wasmtest.Build(wasmtest.Write(1, "hi\n"), wasmtest.Exit(3)))
	pod := e.runPod("p")
	st := e.subscribe(ctx)

	id := e.mustCreate(pod, containerConfig("quick", "quick"))
	e.start(id)
	e.waitState(id, runtime.ContainerState_CONTAINER_EXITED)
	if _, err := e.rs.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}

	want := []struct {
		typ   runtime.ContainerEventType
		state runtime.ContainerState // of the container in the event; UNKNOWN: absent
	}{
		{runtime.ContainerEventType_CONTAINER_CREATED_EVENT, runtime.ContainerState_CONTAINER_CREATED},
		{runtime.ContainerEventType_CONTAINER_STARTED_EVENT, -1}, // running, or exited already
		{runtime.ContainerEventType_CONTAINER_STOPPED_EVENT, runtime.ContainerState_CONTAINER_EXITED},
		{runtime.ContainerEventType_CONTAINER_DELETED_EVENT, runtime.ContainerState_CONTAINER_UNKNOWN},
	}
	var last int64
	for i, w := range want {
		ev, err := st.Recv()
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if ev.ContainerId != id || ev.ContainerEventType != w.typ {
			t.Fatalf("event %d is %v of %s, want %v of %s", i, ev.ContainerEventType, ev.ContainerId, w.typ, id)
		}
		if ev.CreatedAt < last || ev.CreatedAt == 0 {
			t.Errorf("event %d created at %d, after one at %d", i, ev.CreatedAt, last)
		}
		last = ev.CreatedAt
		sb := ev.GetPodSandboxStatus()
		if sb.GetId() != pod || sb.GetMetadata().GetUid() != "uid-p" || sb.GetState() != runtime.PodSandboxState_SANDBOX_READY {
			t.Errorf("event %d: sandbox status %v, want sandbox %s ready with uid uid-p", i, sb, pod)
		}
		var cs *runtime.ContainerStatus
		for _, s := range ev.ContainersStatuses {
			if s.Id == id {
				cs = s
			}
		}
		switch {
		case w.state == runtime.ContainerState_CONTAINER_UNKNOWN:
			if cs != nil {
				t.Errorf("event %d: the deleted container is still in the statuses: %v", i, cs)
			}
		case cs == nil:
			t.Errorf("event %d: no status for the container in %v", i, ev.ContainersStatuses)
		case w.state >= 0 && cs.State != w.state:
			t.Errorf("event %d: container state %v, want %v", i, cs.State, w.state)
		case w.typ == runtime.ContainerEventType_CONTAINER_STOPPED_EVENT && (cs.ExitCode != 3 || cs.FinishedAt == 0):
			t.Errorf("event %d: stopped with exit code %d at %d, want 3 and a finish time", i, cs.ExitCode, cs.FinishedAt)
		case w.typ == runtime.ContainerEventType_CONTAINER_STARTED_EVENT && cs.StartedAt == 0:
			t.Errorf("event %d: started event without a start time: %v", i, cs)
		}
	}
}

// TestSlowSubscriberDropped: a subscriber that reads nothing is dropped
// once its queue is full, and a container's exit is recorded and announced
// to the others all the same.
func TestSlowSubscriberDropped(t *testing.T) {
	e := newEnv(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.importImage("quick", wasmtest.Build(wasmtest.Exit(0)))
	pod := e.runPod("p")

	slow, err := e.svc.events.subscribe() // never read
	if err != nil {
		t.Fatal(err)
	}
	for range eventBuffer {
		e.svc.events.publish(&runtime.ContainerEventResponse{ContainerId: "filler"})
	}
	// A slow client over gRPC, subscribed after the filler: it reads
	// nothing either, but its queue is not full yet.
	lagging := e.subscribe(ctx)

	id := e.mustCreate(pod, containerConfig("quick", "quick"))
	e.start(id)
	if st := e.waitState(id, runtime.ContainerState_CONTAINER_EXITED); st.ExitCode != 0 || st.Reason != "Completed" {
		t.Errorf("exit recorded as %d %q, want 0 Completed", st.ExitCode, st.Reason)
	}
	select {
	case <-slow.dropped:
	default:
		t.Fatal("a subscriber with a full queue was not dropped")
	}
	var got []runtime.ContainerEventType
	for len(got) < 3 {
		ev, err := lagging.Recv()
		if err != nil {
			t.Fatalf("the lagging subscriber's stream ended after %v: %v", got, err)
		}
		got = append(got, ev.ContainerEventType)
	}
	if got[2] != runtime.ContainerEventType_CONTAINER_STOPPED_EVENT {
		t.Errorf("events %v, want created, started, stopped", got)
	}

	// Over gRPC, a dropped subscriber's stream ends with ResourceExhausted.
	// Publishing faster than gRPC sends fills its queue.
	for i := 0; i < 1000*eventBuffer && e.svc.events.active(); i++ {
		e.svc.events.publish(&runtime.ContainerEventResponse{ContainerId: "filler"})
	}
	deadline := time.After(10 * time.Second)
	for {
		_, err := lagging.Recv()
		if err != nil {
			wantCode(t, err, codes.ResourceExhausted, "fell behind")
			break
		}
		select {
		case <-deadline:
			t.Fatal("the dropped subscriber's stream did not end")
		default:
		}
	}
}

// BenchmarkExitToEvent measures the time from a Wasm container's exit (its
// FinishedAt) to the subscriber's receipt of CONTAINER_STOPPED_EVENT over
// the CRI socket: the part of exit-to-pod-status that the runtime owns.
func BenchmarkExitToEvent(b *testing.B) {
	e := newEnv(b, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.importImage("quick", wasmtest.Build(wasmtest.Exit(0)))
	pod := e.runPod("p")
	st := e.subscribe(ctx)
	var total time.Duration
	for i := range b.N {
		cfg := containerConfig("quick", "quick")
		cfg.Metadata.Attempt = uint32(i)
		id := e.mustCreate(pod, cfg)
		e.start(id)
		for {
			ev, err := st.Recv()
			if err != nil {
				b.Fatal(err)
			}
			if ev.ContainerId != id || ev.ContainerEventType != runtime.ContainerEventType_CONTAINER_STOPPED_EVENT {
				continue
			}
			for _, cs := range ev.ContainersStatuses {
				if cs.Id == id {
					total += time.Since(time.Unix(0, cs.FinishedAt))
				}
			}
			break
		}
		if _, err := e.rs.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: id}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs-exit-to-event")
}
