package agent

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// fakeCRI is a node whose containers the test finishes by hand. It records
// every create. Calls the worker must not make panic (nil embedded clients).
type fakeCRI struct {
	runtimeapi.RuntimeServiceClient
	runtimeapi.ImageServiceClient
	sandboxes  []*runtimeapi.PodSandbox
	containers map[string]*runtimeapi.ContainerStatus
	creates    []*runtimeapi.ContainerConfig
	createErr  error
	noImage    bool // the image is not on the node and cannot be pulled
	removed    []string
}

func newFakeCRI() *fakeCRI { return &fakeCRI{containers: map[string]*runtimeapi.ContainerStatus{}} }

func (f *fakeCRI) ListPodSandbox(context.Context, *runtimeapi.ListPodSandboxRequest, ...grpc.CallOption) (*runtimeapi.ListPodSandboxResponse, error) {
	return &runtimeapi.ListPodSandboxResponse{Items: f.sandboxes}, nil
}

func (f *fakeCRI) RunPodSandbox(_ context.Context, r *runtimeapi.RunPodSandboxRequest, _ ...grpc.CallOption) (*runtimeapi.RunPodSandboxResponse, error) {
	id := fmt.Sprintf("sb%d", len(f.sandboxes))
	f.sandboxes = append(f.sandboxes, &runtimeapi.PodSandbox{Id: id, Metadata: r.Config.Metadata, State: runtimeapi.PodSandboxState_SANDBOX_READY, Labels: r.Config.Labels})
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: id}, nil
}

func (f *fakeCRI) ImageStatus(context.Context, *runtimeapi.ImageStatusRequest, ...grpc.CallOption) (*runtimeapi.ImageStatusResponse, error) {
	if f.noImage {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	return &runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{Id: "sha256:abc"}}, nil
}

func (f *fakeCRI) PullImage(_ context.Context, r *runtimeapi.PullImageRequest, _ ...grpc.CallOption) (*runtimeapi.PullImageResponse, error) {
	return nil, status.Errorf(codes.NotFound, "image %q is not in the node's image store", r.Image.Image)
}

func (f *fakeCRI) CreateContainer(_ context.Context, r *runtimeapi.CreateContainerRequest, _ ...grpc.CallOption) (*runtimeapi.CreateContainerResponse, error) {
	if f.createErr != nil {
		return nil, f.createErr
	}
	f.creates = append(f.creates, r.Config)
	id := fmt.Sprintf("c%d", len(f.creates))
	f.containers[id] = &runtimeapi.ContainerStatus{Id: id, Metadata: r.Config.Metadata, State: runtimeapi.ContainerState_CONTAINER_CREATED}
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
}

func (f *fakeCRI) StartContainer(_ context.Context, r *runtimeapi.StartContainerRequest, _ ...grpc.CallOption) (*runtimeapi.StartContainerResponse, error) {
	c := f.containers[r.ContainerId]
	c.State, c.StartedAt = runtimeapi.ContainerState_CONTAINER_RUNNING, 1
	return &runtimeapi.StartContainerResponse{}, nil
}

func (f *fakeCRI) ContainerStatus(_ context.Context, r *runtimeapi.ContainerStatusRequest, _ ...grpc.CallOption) (*runtimeapi.ContainerStatusResponse, error) {
	c, ok := f.containers[r.ContainerId]
	if !ok {
		return nil, status.Error(codes.NotFound, "no such container")
	}
	return &runtimeapi.ContainerStatusResponse{Status: c}, nil
}

func (f *fakeCRI) RemoveContainer(_ context.Context, r *runtimeapi.RemoveContainerRequest, _ ...grpc.CallOption) (*runtimeapi.RemoveContainerResponse, error) {
	f.removed = append(f.removed, r.ContainerId)
	delete(f.containers, r.ContainerId)
	return &runtimeapi.RemoveContainerResponse{}, nil
}

// exit finishes the newest container with code.
func (f *fakeCRI) exit(code int32) {
	id := fmt.Sprintf("c%d", len(f.creates))
	c := f.containers[id]
	c.State, c.ExitCode, c.FinishedAt = runtimeapi.ContainerState_CONTAINER_EXITED, code, 2
	c.Reason = "Completed"
	if code != 0 {
		c.Reason = "Error"
	}
}

// newTestWorker returns a worker for a one-container pod over fake CRI,
// with a clock the test moves.
func newTestWorker(t *testing.T, policy string) (*podWorker, *fakeCRI, *time.Time) {
	cri := newFakeCRI()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	a := New(Config{NodeName: "n", Runtime: cri, Images: cri, LogDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	a.now = func() time.Time { return now }
	p := &skiffv1.Pod{
		Metadata: &skiffv1.ObjectMeta{Name: "p", Namespace: "default", Uid: "u1"},
		Spec:     &skiffv1.PodSpec{RestartPolicy: policy, Containers: []*skiffv1.Container{{Name: "c", Image: "hello"}}},
		Status:   &skiffv1.PodStatus{Phase: "Pending"},
	}
	w := newPodWorker(a, p)
	w.pod, _ = w.take()
	return w, cri, &now
}

func TestRestartPolicy(t *testing.T) {
	tests := []struct {
		policy      string
		exitCode    int32
		wantRestart bool
		wantPhase   string // after the exit, before any restart
	}{
		{"Never", 0, false, "Succeeded"},
		{"Never", 1, false, "Failed"},
		{"OnFailure", 0, false, "Succeeded"},
		{"OnFailure", 1, true, "Running"},
		{"Always", 0, true, "Running"},
		{"Always", 1, true, "Running"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s exit %d", tt.policy, tt.exitCode), func(t *testing.T) {
			w, cri, now := newTestWorker(t, tt.policy)
			ctx := context.Background()
			w.sync(ctx)
			if got := w.status().Phase; got != "Running" {
				t.Fatalf("phase after start %s, want Running", got)
			}
			cri.exit(tt.exitCode)
			w.sync(ctx)
			st := w.status()
			if st.Phase != tt.wantPhase {
				t.Errorf("phase after exit %s, want %s", st.Phase, tt.wantPhase)
			}
			cs := st.ContainerStatuses[0]
			if !tt.wantRestart {
				if cs.State.GetTerminated().GetExitCode() != tt.exitCode || len(cri.creates) != 1 {
					t.Errorf("state %v after %d creates, want terminated %d and no restart", cs.State, len(cri.creates), tt.exitCode)
				}
				if got := w.interval(); got != w.a.timing.idle {
					t.Errorf("a settled pod is looked at every %s, want %s", got, w.a.timing.idle)
				}
				return
			}
			if cs.State.GetWaiting().GetReason() != "CrashLoopBackOff" || cs.LastState.GetTerminated().GetExitCode() != tt.exitCode || cs.GetRestartCount() != 1 {
				t.Errorf("status %v, want CrashLoopBackOff, last exit %d, 1 restart", cs, tt.exitCode)
			}
			// Not before the back-off has passed...
			*now = now.Add(w.a.timing.backoffStart - time.Second)
			w.sync(ctx)
			if len(cri.creates) != 1 {
				t.Fatalf("restarted after %d creates before the back-off ended", len(cri.creates))
			}
			// ...then as attempt 1, with its own log file.
			*now = now.Add(2 * time.Second)
			w.sync(ctx)
			if len(cri.creates) != 2 || cri.creates[1].Metadata.Attempt != 1 || cri.creates[1].LogPath != "c/1.log" {
				t.Fatalf("creates %v, want a second one as attempt 1 logging to c/1.log", cri.creates)
			}
			if w.status().ContainerStatuses[0].State.GetRunning() == nil {
				t.Errorf("restarted container is not running")
			}
			if got := w.interval(); got != w.a.timing.poll {
				t.Errorf("interval while running %s, want %s", got, w.a.timing.poll)
			}
			// A second failure doubles the back-off.
			cri.exit(1)
			w.sync(ctx)
			if c := w.containers["c"]; c.backoff != 2*w.a.timing.backoffStart || c.restarts != 2 {
				t.Errorf("back-off %s after %d restarts, want %s", c.backoff, c.restarts, 2*w.a.timing.backoffStart)
			}
		})
	}
}

func TestInvalidModuleFailsPod(t *testing.T) {
	w, cri, _ := newTestWorker(t, "Always")
	cri.createErr = status.Error(codes.InvalidArgument, "compile module: invalid section order")
	w.sync(context.Background())
	w.sync(context.Background())
	st := w.status()
	if st.Phase != "Failed" || st.Reason != "CreateContainerError" || st.Message != "container c: compile module: invalid section order" {
		t.Errorf("status %s %s %q, want Failed CreateContainerError naming the container", st.Phase, st.Reason, st.Message)
	}
}

func TestMissingImageWaits(t *testing.T) {
	w, cri, _ := newTestWorker(t, "Always")
	cri.noImage = true
	w.sync(context.Background())
	st := w.status()
	cs := st.ContainerStatuses[0]
	if st.Phase != "Pending" || cs.State.GetWaiting().GetReason() != "ErrImagePull" || len(cri.creates) != 0 {
		t.Errorf("status %s %v, want Pending with the container waiting on ErrImagePull", st.Phase, cs.State)
	}
}

// TestFinishedPodIsNotRunAgain: a pod that finished before the agent
// started (its sandbox gone) stays as it is.
func TestFinishedPodIsNotRunAgain(t *testing.T) {
	w, cri, _ := newTestWorker(t, "Always")
	w.pod.Status.Phase = "Succeeded"
	w.sync(context.Background())
	if len(cri.sandboxes) != 0 || len(cri.creates) != 0 {
		t.Errorf("finished pod got %d sandboxes and %d containers", len(cri.sandboxes), len(cri.creates))
	}
	if got := w.interval(); got != w.a.timing.idle {
		t.Errorf("a finished pod is looked at every %s, want %s", got, w.a.timing.idle)
	}
}

// TestIntervalIsTheShortestNeed: a running container is polled even while
// another waits out a long back-off.
func TestIntervalIsTheShortestNeed(t *testing.T) {
	w, _, now := newTestWorker(t, "Always")
	w.sandboxID = "sb0"
	w.containers = map[string]*containerRun{
		"a": {backoffUntil: now.Add(4 * time.Second), state: waiting("CrashLoopBackOff", "")},
		"b": {id: "c1", state: running()},
	}
	for i := 0; i < 20; i++ { // map order varies
		if got := w.interval(); got != w.a.timing.poll {
			t.Fatalf("interval %s, want %s", got, w.a.timing.poll)
		}
	}
	delete(w.containers, "b")
	if got := w.interval(); got != 4*time.Second {
		t.Errorf("interval with only a back-off %s, want 4s", got)
	}
}
