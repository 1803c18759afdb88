package agent

import (
	"context"
	"slices"
	"testing"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// initWorker is a worker for a pod with init containers i1 and i2 and a
// container c.
func initWorker(t *testing.T, policy string) (*podWorker, *fakeCRI) {
	w, cri, _ := newTestWorker(t, policy)
	w.pod.Spec.InitContainers = []*skiffv1.Container{{Name: "i1", Image: "hello"}, {Name: "i2", Image: "hello"}}
	return w, cri
}

func created(cri *fakeCRI) []string {
	var out []string
	for _, c := range cri.creates {
		out = append(out, c.Metadata.Name)
	}
	return out
}

// TestInitContainersRunInOrder: init containers run one at a time, each to
// success, before the pod's containers; the pod is Pending and not
// Initialized until then, with each init container's status.
func TestInitContainersRunInOrder(t *testing.T) {
	w, cri := initWorker(t, "Never")
	ctx := context.Background()
	w.sync(ctx)
	if got := created(cri); !slices.Equal(got, []string{"i1"}) {
		t.Fatalf("created %q, want only i1 first", got)
	}
	st := w.status()
	if c := condition(st, "Initialized"); st.Phase != "Pending" || c.GetStatus() != "False" || c.GetReason() != "ContainersNotInitialized" || c.GetMessage() != "containers with incomplete status: [i1 i2]" {
		t.Errorf("phase %s, Initialized %v; want Pending, not initialized, naming i1 and i2", st.Phase, c)
	}
	if got := st.ContainerStatuses[0].State.GetWaiting().GetReason(); got != "PodInitializing" {
		t.Errorf("container c waits with %q, want PodInitializing", got)
	}

	cri.exitContainer("c1", 0)
	w.sync(ctx)
	if got := created(cri); !slices.Equal(got, []string{"i1", "i2"}) {
		t.Fatalf("created %q after i1 succeeded, want i2 next", got)
	}
	st = w.status()
	if is := st.InitContainerStatuses[0]; is.State.GetTerminated().GetExitCode() != 0 || !is.GetReady() {
		t.Errorf("i1 status %v, want terminated 0 and ready", is)
	}
	if c := condition(st, "Initialized"); c.GetMessage() != "containers with incomplete status: [i2]" {
		t.Errorf("Initialized %v, want only i2 incomplete", c)
	}

	cri.exitContainer("c2", 0)
	w.sync(ctx)
	if got := created(cri); !slices.Equal(got, []string{"i1", "i2", "c"}) {
		t.Fatalf("created %q after both init containers, want c", got)
	}
	st = w.status()
	if c := condition(st, "Initialized"); st.Phase != "Running" || c.GetStatus() != "True" || len(st.InitContainerStatuses) != 2 {
		t.Errorf("phase %s, Initialized %v, %d init statuses; want Running, initialized, 2", st.Phase, c, len(st.InitContainerStatuses))
	}
	// The pod's container exiting does not run the init containers again.
	cri.exitContainer("c3", 0)
	w.sync(ctx)
	if got := w.status().Phase; got != "Succeeded" || len(cri.creates) != 3 {
		t.Errorf("phase %s after %d creates, want Succeeded and no new container", got, len(cri.creates))
	}
}

// TestInitContainerFailure: a failed init container fails the pod under
// Never, and is restarted after a back-off otherwise, the pod's containers
// waiting.
func TestInitContainerFailure(t *testing.T) {
	for _, tt := range []struct {
		policy, wantPhase, wantWaiting string
	}{
		{"Never", "Failed", ""},
		{"OnFailure", "Pending", "CrashLoopBackOff"},
		{"Always", "Pending", "CrashLoopBackOff"},
	} {
		t.Run(tt.policy, func(t *testing.T) {
			w, cri := initWorker(t, tt.policy)
			ctx := context.Background()
			w.sync(ctx)
			cri.exitContainer("c1", 2)
			w.sync(ctx)
			st := w.status()
			if st.Phase != tt.wantPhase {
				t.Errorf("phase %s, want %s", st.Phase, tt.wantPhase)
			}
			if got := created(cri); !slices.Equal(got, []string{"i1"}) {
				t.Errorf("created %q, want only i1", got)
			}
			is := st.InitContainerStatuses[0]
			if tt.wantWaiting == "" {
				if is.State.GetTerminated().GetExitCode() != 2 || st.Reason != "InitContainerFailed" {
					t.Errorf("i1 %v, pod reason %q; want terminated 2, InitContainerFailed", is.State, st.Reason)
				}
				return
			}
			if is.State.GetWaiting().GetReason() != tt.wantWaiting || is.LastState.GetTerminated().GetExitCode() != 2 || is.GetRestartCount() != 1 {
				t.Errorf("i1 %v, want %s after exit 2, 1 restart", is, tt.wantWaiting)
			}
		})
	}
}
