package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

// fakeCRI is a node whose containers the test finishes by hand. It records
// every create, and in calls the changes the worker asks of the node, in
// order. Calls the worker must not make panic (nil embedded clients).
//
// Every call holds mu: the worker calls StopContainer from one goroutine per
// container, and the PLEG lists containers from its own. Tests read the
// fields once the workers are done, or under mu. Container changes go to
// GetContainerEvents streams as CRI events.
type fakeCRI struct {
	runtimeapi.RuntimeServiceClient
	runtimeapi.ImageServiceClient
	calls      *transcript
	sandboxes  []*runtimeapi.PodSandbox
	containers map[string]*runtimeapi.ContainerStatus
	sandboxOf  map[string]string // container ID to sandbox ID
	creates    []*runtimeapi.ContainerConfig
	createErr  error
	noImage    bool // the image is not on the node and cannot be pulled
	removed    []string

	mu       sync.Mutex
	stopExit int32 // the exit code of a stopped container: 137, killed, unless set
	subs     []chan *runtimeapi.ContainerEventResponse
	noEvents bool // GetContainerEvents is Unimplemented, as in an older runtime
	statusN  int  // ContainerStatus calls
	// startErr is StartContainer's answer while set; with startBlocks,
	// StartContainer returns only when its context ends.
	startErr      error
	startBlocks   bool
	startDeadline bool // the last StartContainer call had a deadline
	listN         int  // ListContainers calls
}

// GetContainerEvents streams the fake's container events until ctx ends.
func (f *fakeCRI) GetContainerEvents(ctx context.Context, _ *runtimeapi.GetEventsRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[runtimeapi.ContainerEventResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.noEvents {
		return nil, status.Error(codes.Unimplemented, "unknown method GetContainerEvents")
	}
	ch := make(chan *runtimeapi.ContainerEventResponse, 4096)
	f.subs = append(f.subs, ch)
	return &fakeEventStream{ctx: ctx, ch: ch}, nil
}

// emit sends an event about container id to the streams. Call with mu held.
func (f *fakeCRI) emit(typ runtimeapi.ContainerEventType, id string) {
	ev := &runtimeapi.ContainerEventResponse{ContainerId: id, ContainerEventType: typ}
	for _, sb := range f.sandboxes {
		if sb.Id == f.sandboxOf[id] {
			ev.PodSandboxStatus = &runtimeapi.PodSandboxStatus{Id: sb.Id, Metadata: sb.Metadata, State: sb.State}
		}
	}
	if c := f.containers[id]; c != nil {
		ev.ContainersStatuses = []*runtimeapi.ContainerStatus{proto.Clone(c).(*runtimeapi.ContainerStatus)}
	}
	for _, ch := range f.subs {
		select {
		case ch <- ev:
		default: // a stream that fell behind loses events, as the CRI server drops it
		}
	}
}

// fakeEventStream is the client side of a GetContainerEvents stream.
type fakeEventStream struct {
	grpc.ClientStream
	ctx context.Context
	ch  chan *runtimeapi.ContainerEventResponse
}

func (s *fakeEventStream) Header() (metadata.MD, error) { return metadata.MD{}, nil }

func (s *fakeEventStream) Recv() (*runtimeapi.ContainerEventResponse, error) {
	select {
	case ev, ok := <-s.ch:
		if !ok {
			return nil, status.Error(codes.Unavailable, "the CRI server closed the stream")
		}
		return ev, nil
	case <-s.ctx.Done():
		return nil, status.FromContextError(s.ctx.Err()).Err()
	}
}

func newFakeCRI() *fakeCRI {
	return &fakeCRI{
		calls: &transcript{}, containers: map[string]*runtimeapi.ContainerStatus{}, sandboxOf: map[string]string{},
		stopExit: 137,
	}
}

// transcript is the ordered record of what the worker changed, on the node
// and in the API. Safe for concurrent use.
type transcript struct {
	mu    sync.Mutex
	calls []string
}

func (t *transcript) add(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.calls = append(t.calls, fmt.Sprintf(format, args...))
}

func (t *transcript) get() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.calls)
}

func (t *transcript) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.calls = nil
}

// count is how many calls start with prefix.
func (t *transcript) count(prefix string) int {
	n := 0
	for _, c := range t.get() {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

func (f *fakeCRI) ListPodSandbox(context.Context, *runtimeapi.ListPodSandboxRequest, ...grpc.CallOption) (*runtimeapi.ListPodSandboxResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &runtimeapi.ListPodSandboxResponse{Items: slices.Clone(f.sandboxes)}, nil
}

func (f *fakeCRI) RunPodSandbox(_ context.Context, r *runtimeapi.RunPodSandboxRequest, _ ...grpc.CallOption) (*runtimeapi.RunPodSandboxResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := fmt.Sprintf("sb%d", len(f.sandboxes))
	f.calls.add("RunPodSandbox %s", id)
	f.sandboxes = append(f.sandboxes, &runtimeapi.PodSandbox{Id: id, Metadata: r.Config.Metadata, State: runtimeapi.PodSandboxState_SANDBOX_READY, Labels: r.Config.Labels})
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: id}, nil
}

// StopPodSandbox marks the sandbox not ready; it stays listed, as in CRI.
func (f *fakeCRI) StopPodSandbox(_ context.Context, r *runtimeapi.StopPodSandboxRequest, _ ...grpc.CallOption) (*runtimeapi.StopPodSandboxResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls.add("StopPodSandbox %s", r.PodSandboxId)
	for _, sb := range f.sandboxes {
		if sb.Id == r.PodSandboxId {
			sb.State = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
		}
	}
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

// RemovePodSandbox removes the sandbox and its containers.
func (f *fakeCRI) RemovePodSandbox(_ context.Context, r *runtimeapi.RemovePodSandboxRequest, _ ...grpc.CallOption) (*runtimeapi.RemovePodSandboxResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls.add("RemovePodSandbox %s", r.PodSandboxId)
	f.sandboxes = slices.DeleteFunc(f.sandboxes, func(sb *runtimeapi.PodSandbox) bool { return sb.Id == r.PodSandboxId })
	for id := range f.containers {
		if f.sandboxOf[id] == r.PodSandboxId {
			delete(f.containers, id)
		}
	}
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}

// StopContainer ends the container with stopExit, as if it had been killed
// (or had exited on SIGTERM); calls has the timeout it was given.
func (f *fakeCRI) StopContainer(_ context.Context, r *runtimeapi.StopContainerRequest, _ ...grpc.CallOption) (*runtimeapi.StopContainerResponse, error) {
	f.calls.add("StopContainer %s timeout=%d", r.ContainerId, r.Timeout)
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[r.ContainerId]
	if !ok {
		return nil, status.Error(codes.NotFound, "no such container")
	}
	if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
		c.State, c.ExitCode, c.FinishedAt, c.Reason = runtimeapi.ContainerState_CONTAINER_EXITED, f.stopExit, 3, "Error"
		if f.stopExit == 0 {
			c.Reason = "Completed"
		}
		f.emit(runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, r.ContainerId)
	}
	return &runtimeapi.StopContainerResponse{}, nil
}

// PodSandboxStatus answers with the sandbox's network namespace path in
// its verbose info, as the CRI server does.
func (f *fakeCRI) PodSandboxStatus(_ context.Context, r *runtimeapi.PodSandboxStatusRequest, _ ...grpc.CallOption) (*runtimeapi.PodSandboxStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, sb := range f.sandboxes {
		if sb.Id == r.PodSandboxId {
			return &runtimeapi.PodSandboxStatusResponse{
				Status: &runtimeapi.PodSandboxStatus{
					Id: sb.Id, Metadata: sb.Metadata, State: sb.State,
					Network: &runtimeapi.PodSandboxNetworkStatus{Ip: fakeSandboxIP(sb.Id)},
				},
				Info: map[string]string{"info": `{"netnsPath":"/run/test/netns/` + sb.Id + `"}`},
			}, nil
		}
	}
	return nil, status.Error(codes.NotFound, "no such sandbox")
}

// fakeSandboxIP is the pod IP the fake gives a sandbox: 10.244.0.N for
// sandbox sbN, 10.244.9.9 for one an earlier agent left (sb-old).
func fakeSandboxIP(id string) string {
	if n, ok := strings.CutPrefix(id, "sb"); ok && n != "-old" {
		return "10.244.0." + n
	}
	return "10.244.9.9"
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
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.createErr != nil {
		return nil, f.createErr
	}
	for _, sb := range f.sandboxes {
		if sb.Id == r.PodSandboxId && sb.State != runtimeapi.PodSandboxState_SANDBOX_READY {
			return nil, status.Errorf(codes.FailedPrecondition, "sandbox %s is not ready", sb.Id)
		}
	}
	f.creates = append(f.creates, r.Config)
	id := fmt.Sprintf("c%d", len(f.creates))
	f.calls.add("CreateContainer %s %s", id, r.Config.Metadata.Name)
	f.containers[id] = &runtimeapi.ContainerStatus{Id: id, Metadata: r.Config.Metadata, State: runtimeapi.ContainerState_CONTAINER_CREATED, Labels: r.Config.Labels}
	f.sandboxOf[id] = r.PodSandboxId
	f.emit(runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, id)
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
}

func (f *fakeCRI) StartContainer(ctx context.Context, r *runtimeapi.StartContainerRequest, _ ...grpc.CallOption) (*runtimeapi.StartContainerResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, f.startDeadline = ctx.Deadline()
	if f.startErr != nil {
		return nil, f.startErr
	}
	if f.startBlocks {
		// A module whose start never returns: the call ends only with
		// its context.
		f.calls.add("StartContainer %s blocks", r.ContainerId)
		f.mu.Unlock()
		<-ctx.Done()
		f.mu.Lock()
		f.calls.add("StartContainer %s returned", r.ContainerId)
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	c := f.containers[r.ContainerId]
	c.State, c.StartedAt = runtimeapi.ContainerState_CONTAINER_RUNNING, 1
	f.emit(runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, r.ContainerId)
	return &runtimeapi.StartContainerResponse{}, nil
}

func (f *fakeCRI) ContainerStatus(_ context.Context, r *runtimeapi.ContainerStatusRequest, _ ...grpc.CallOption) (*runtimeapi.ContainerStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statusN++
	c, ok := f.containers[r.ContainerId]
	if !ok {
		return nil, status.Error(codes.NotFound, "no such container")
	}
	return &runtimeapi.ContainerStatusResponse{Status: proto.Clone(c).(*runtimeapi.ContainerStatus)}, nil
}

func (f *fakeCRI) ListContainers(_ context.Context, r *runtimeapi.ListContainersRequest, _ ...grpc.CallOption) (*runtimeapi.ListContainersResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listN++
	var out []*runtimeapi.Container
	for _, c := range f.containers {
		sb := f.sandboxOf[c.Id]
		if want := r.GetFilter().GetPodSandboxId(); want != "" && sb != want {
			continue
		}
		out = append(out, &runtimeapi.Container{Id: c.Id, PodSandboxId: sb, Metadata: c.Metadata, State: c.State, Labels: c.Labels})
	}
	return &runtimeapi.ListContainersResponse{Containers: out}, nil
}

func (f *fakeCRI) RemoveContainer(_ context.Context, r *runtimeapi.RemoveContainerRequest, _ ...grpc.CallOption) (*runtimeapi.RemoveContainerResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls.add("RemoveContainer %s", r.ContainerId)
	f.removed = append(f.removed, r.ContainerId)
	if _, ok := f.containers[r.ContainerId]; ok {
		f.emit(runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, r.ContainerId)
	}
	delete(f.containers, r.ContainerId)
	return &runtimeapi.RemoveContainerResponse{}, nil
}

// exit finishes the newest container with code.
func (f *fakeCRI) exit(code int32) {
	f.mu.Lock()
	id := fmt.Sprintf("c%d", len(f.creates))
	f.mu.Unlock()
	f.exitContainer(id, code)
}

// exitContainer finishes the container id with code, and says so on the
// event streams.
func (f *fakeCRI) exitContainer(id string, code int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.emit(runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, id)
	c := f.containers[id]
	c.State, c.ExitCode, c.FinishedAt = runtimeapi.ContainerState_CONTAINER_EXITED, code, 2
	c.Reason = "Completed"
	if code != 0 {
		c.Reason = "Error"
	}
}

// newTestWorker returns a worker for a one-container pod over fake CRI,
// with a clock the test moves.
func newTestWorker(t testing.TB, policy string) (*podWorker, *fakeCRI, *time.Time) {
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
				if got := w.interval(); got != never {
					t.Errorf("a settled pod is looked at every %s, want only when woken", got)
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
			// Confined by default, as the kubelet's SeccompDefault asks:
			// CRI leaves a container without a profile unconfined.
			if sc := cri.creates[1].GetLinux().GetSecurityContext(); sc.GetSeccomp() == nil || sc.GetSeccomp().GetProfileType() != runtimeapi.SecurityProfile_RuntimeDefault {
				t.Errorf("seccomp profile %v, want RuntimeDefault", sc.GetSeccomp())
			}
			if w.status().ContainerStatuses[0].State.GetRunning() == nil {
				t.Errorf("restarted container is not running")
			}
			if got := w.interval(); got != never {
				t.Errorf("a running container is polled every %s, want only when woken", got)
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

// TestPodIPFromSandbox: the pod reports its sandbox's IP from the CRI:
// of the sandbox it made, of the one it adopted after a restart, and of
// the new one that replaced a sandbox found not ready.
func TestPodIPFromSandbox(t *testing.T) {
	w, _, _ := newTestWorker(t, "Always")
	w.sync(context.Background())
	if got := w.status().GetPodIp(); got != "10.244.0.0" {
		t.Errorf("pod IP %q, want its sandbox's 10.244.0.0", got)
	}

	w, cri, _ := newTestWorker(t, "Always")
	w.pod.Status.Phase = "Running"
	leftSandbox(cri, runtimeapi.PodSandboxState_SANDBOX_READY)
	w.sync(context.Background())
	if got := w.status().GetPodIp(); got != "10.244.9.9" {
		t.Errorf("pod IP %q, want the adopted sandbox's 10.244.9.9", got)
	}

	w, cri, _ = newTestWorker(t, "Always")
	w.pod.Status.Phase = "Running"
	leftSandbox(cri, runtimeapi.PodSandboxState_SANDBOX_NOTREADY)
	w.sync(context.Background())
	if got := w.status().GetPodIp(); got != "10.244.0.0" {
		t.Errorf("pod IP %q after the sandbox was replaced, want the new sandbox's 10.244.0.0", got)
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
	// No event will say the image arrived: the worker tries again.
	if got := w.interval(); got != w.a.timing.recreate {
		t.Errorf("next look at a missing image in %s, want %s", got, w.a.timing.recreate)
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
	if got := w.interval(); got != never {
		t.Errorf("a finished pod is looked at every %s, want only when woken", got)
	}
}

// TestIntervalIsTheShortestNeed: a running container is not polled (its
// exit wakes the worker), a back-off is waited out, a failed status write
// is retried.
func TestIntervalIsTheShortestNeed(t *testing.T) {
	w, _, now := newTestWorker(t, "Always")
	w.sandboxID = "sb0"
	w.containers = map[string]*containerRun{
		"a": {backoffUntil: now.Add(4 * time.Second), state: waiting("CrashLoopBackOff", "")},
		"b": {id: "c1", state: running()},
	}
	for i := 0; i < 20; i++ { // map order varies
		if got := w.interval(); got != 4*time.Second {
			t.Fatalf("interval %s, want 4s, the rest of the back-off", got)
		}
	}
	w.unreported = true
	if got := w.interval(); got != w.a.timing.retry {
		t.Errorf("interval with a status to write %s, want %s", got, w.a.timing.retry)
	}
	w.unreported = false
	delete(w.containers, "a")
	if got := w.interval(); got != never {
		t.Errorf("interval with a running container %s, want only when woken", got)
	}
}

// fakePods is the API's side of one pod: Get returns its stored copy,
// UpdateStatus replaces the stored status, and a successful Delete removes
// it. Writes go into the shared transcript. It is safe for concurrent use.
type fakePods struct {
	skiffv1connect.PodServiceClient
	calls *transcript

	mu         sync.Mutex
	pod        *skiffv1.Pod // the stored pod; nil once deleted
	statuses   []*skiffv1.PodStatus
	deletes    []*skiffv1.DeleteRequest
	getErr     error                   // returned by Get and UpdateStatus while set
	gets       int                     // Get calls answered
	deleteErrs []error                 // returned by the next Deletes, in turn
	updated    chan *skiffv1.PodStatus // when set, gets each status written, if it has room
}

// newFakePods stores the worker's pod as the API's copy and makes it the
// worker's pod client.
func newFakePods(w *podWorker, cri *fakeCRI) *fakePods {
	f := &fakePods{calls: cri.calls, pod: proto.Clone(w.pod).(*skiffv1.Pod)}
	w.a.cfg.Pods = f
	return f
}

func (f *fakePods) Get(_ context.Context, r *connect.Request[skiffv1.GetRequest]) (*connect.Response[skiffv1.Pod], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.getErr != nil {
		return nil, f.getErr
	}
	f.gets++
	if f.pod == nil || f.pod.Metadata.Namespace != r.Msg.Namespace || f.pod.Metadata.Name != r.Msg.Name {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("pods %q not found", r.Msg.Name))
	}
	return connect.NewResponse(proto.Clone(f.pod).(*skiffv1.Pod)), nil
}

func (f *fakePods) UpdateStatus(_ context.Context, r *connect.Request[skiffv1.Pod]) (*connect.Response[skiffv1.Pod], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.getErr != nil {
		return nil, f.getErr
	}
	if f.pod == nil {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("pod not found"))
	}
	// As the apiserver: a compare-and-swap on the resourceVersion given.
	if f.pod.Metadata.Uid != r.Msg.GetMetadata().GetUid() {
		return nil, connect.NewError(connect.CodeAborted, errors.New("the object was replaced"))
	}
	if rv := r.Msg.GetMetadata().GetResourceVersion(); rv != 0 && rv != f.pod.Metadata.ResourceVersion {
		f.calls.add("UpdateStatus conflict")
		return nil, connect.NewError(connect.CodeAborted, errors.New("the object has been modified"))
	}
	f.calls.add("UpdateStatus %s", r.Msg.GetStatus().GetPhase())
	f.pod.Metadata.ResourceVersion++
	f.pod.Status = proto.Clone(r.Msg.GetStatus()).(*skiffv1.PodStatus)
	f.statuses = append(f.statuses, f.pod.Status)
	if f.updated != nil {
		select {
		case f.updated <- f.pod.Status:
		default:
		}
	}
	return connect.NewResponse(proto.Clone(f.pod).(*skiffv1.Pod)), nil
}

func (f *fakePods) Delete(_ context.Context, r *connect.Request[skiffv1.DeleteRequest]) (*connect.Response[skiffv1.Pod], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deletes = append(f.deletes, proto.Clone(r.Msg).(*skiffv1.DeleteRequest))
	f.calls.add("Delete %s/%s uid=%s grace=%s", r.Msg.Namespace, r.Msg.Name, r.Msg.Uid, optional(r.Msg.GracePeriodSeconds))
	if len(f.deleteErrs) > 0 {
		err := f.deleteErrs[0]
		f.deleteErrs = f.deleteErrs[1:]
		if err != nil {
			return nil, err
		}
	}
	if f.pod == nil {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("pods %q not found", r.Msg.Name))
	}
	gone := f.pod
	f.pod = nil
	return connect.NewResponse(gone), nil
}

// lastStatus is the status last written, nil when none was.
func (f *fakePods) lastStatus() *skiffv1.PodStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.statuses) == 0 {
		return nil
	}
	return f.statuses[len(f.statuses)-1]
}

func (f *fakePods) deleteCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.deletes)
}

func optional(p *int64) string {
	if p == nil {
		return "unset"
	}
	return strconv.FormatInt(*p, 10)
}

// TestFinishedPodReleasesItsSandbox: once the API has a pod's final phase,
// its sandbox is stopped, once, so that its network namespace goes; its
// containers stay, for their logs. A pod still running keeps its sandbox,
// and so does a finished one whose status the API does not have yet.
func TestFinishedPodReleasesItsSandbox(t *testing.T) {
	unavailable := connect.NewError(connect.CodeUnavailable, errors.New("no leader"))
	tests := []struct {
		name      string
		policy    string
		exit      *int32 // the container's exit code; nil while it runs
		getErr    error  // the API's answer to the status write
		wantPhase string // the phase the API ends with
		wantStops int
	}{
		{name: "succeeded", policy: "Never", exit: proto.Int32(0), wantPhase: "Succeeded", wantStops: 1},
		{name: "failed", policy: "Never", exit: proto.Int32(1), wantPhase: "Failed", wantStops: 1},
		{name: "succeeded under OnFailure", policy: "OnFailure", exit: proto.Int32(0), wantPhase: "Succeeded", wantStops: 1},
		{name: "running", policy: "Never", wantPhase: "Running"},
		{name: "restarting", policy: "Always", exit: proto.Int32(0), wantPhase: "Running"},
		{name: "finished, status not written", policy: "Never", exit: proto.Int32(0), getErr: unavailable, wantPhase: "Running"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, cri, _ := newTestWorker(t, tt.policy)
			pods := newFakePods(w, cri)
			ctx := context.Background()
			round := func() {
				w.sync(ctx)
				w.report(ctx)
				w.release(ctx)
			}
			round()
			if tt.exit != nil {
				cri.exit(*tt.exit)
			}
			pods.getErr = tt.getErr
			for range 4 {
				round()
			}
			if got := pods.pod.GetStatus().GetPhase(); got != tt.wantPhase {
				t.Errorf("the API has phase %s, want %s", got, tt.wantPhase)
			}
			if got := cri.calls.count("StopPodSandbox"); got != tt.wantStops {
				t.Errorf("StopPodSandbox called %d times, want %d; calls %q", got, tt.wantStops, cri.calls.get())
			}
			if tt.wantStops > 0 {
				calls := cri.calls.get()
				if i, j := slices.Index(calls, "UpdateStatus "+tt.wantPhase), slices.Index(calls, "StopPodSandbox sb0"); i < 0 || j < i {
					t.Errorf("calls %q: want the sandbox stopped after the final status was written", calls)
				}
				if n := cri.calls.count("RemovePodSandbox") + cri.calls.count("RemoveContainer"); n != 0 || len(cri.containers) != 1 {
					t.Errorf("calls %q leave %d containers: want the sandbox and the container kept for the logs", cri.calls.get(), len(cri.containers))
				}
			}
			if tt.getErr == nil {
				return
			}
			// Once the API answers again, the status is written and the
			// sandbox released.
			pods.getErr = nil
			for range 3 {
				round()
			}
			if got, stops := pods.pod.GetStatus().GetPhase(), cri.calls.count("StopPodSandbox"); got != "Succeeded" || stops != 1 {
				t.Errorf("after the API came back: phase %s, %d sandbox stops; want Succeeded, 1", got, stops)
			}
		})
	}
}

// TestStatusWriteIsOneCall: a status write is one UpdateStatus on the
// version of the pod the worker knows, with no read before it; when
// someone else wrote the pod since, the write is refused, and the worker
// reads the pod again and writes on it, keeping what the other wrote.
func TestStatusWriteIsOneCall(t *testing.T) {
	w, cri, _ := newTestWorker(t, "Never")
	w.pod.Metadata.ResourceVersion = 7
	pods := newFakePods(w, cri)
	ctx := context.Background()
	w.sync(ctx)
	w.report(ctx)
	if got := pods.pod.GetStatus().GetPhase(); got != "Running" || pods.gets != 0 {
		t.Fatalf("after the first write: phase %s with %d reads, want Running with none", got, pods.gets)
	}
	cri.exit(0)
	w.sync(ctx)
	w.report(ctx) // on its own write's version, which the watch has not brought yet
	if got := pods.pod.GetStatus().GetPhase(); got != "Succeeded" || pods.gets != 0 {
		t.Fatalf("after the exit: phase %s with %d reads, want Succeeded with none", got, pods.gets)
	}
	if got := cri.calls.count("UpdateStatus"); got != 2 {
		t.Errorf("%d status writes, want 2; calls %q", got, cri.calls.get())
	}

	// Another writer's condition, which the worker has not seen.
	w2, cri2, now := newTestWorker(t, "Never")
	w2.pod.Metadata.ResourceVersion = 7
	pods2 := newFakePods(w2, cri2)
	pods2.pod.Status.Conditions = []*skiffv1.Condition{{Type: "PodScheduled", Status: "True", LastTransitionTime: timestamppb.New(*now)}}
	pods2.pod.Metadata.ResourceVersion = 8
	w2.sync(ctx)
	w2.report(ctx)
	if got := cri2.calls.get(); !slices.Contains(got, "UpdateStatus conflict") || !slices.Contains(got, "UpdateStatus Running") {
		t.Errorf("calls %q: want a refused write, then one on the pod read again", got)
	}
	if pods2.gets != 1 || condition(pods2.pod.GetStatus(), "PodScheduled") == nil || pods2.pod.GetStatus().GetPhase() != "Running" {
		t.Errorf("after %d reads the API has %v: want one read, Running, the other writer's condition kept", pods2.gets, pods2.pod.GetStatus())
	}
}
