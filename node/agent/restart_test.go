package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

// leftSandbox puts on the fake node a sandbox of the test pod (uid u1) in
// state, left by an earlier run of the agent, and returns its id.
func leftSandbox(cri *fakeCRI, state runtimeapi.PodSandboxState) string {
	cri.sandboxes = append(cri.sandboxes, &runtimeapi.PodSandbox{
		Id:       "sb-old",
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "default", Uid: "u1"},
		State:    state,
		Labels:   map[string]string{LabelPodUID: "u1", LabelPodName: "p", LabelPodNamespace: "default"},
	})
	return "sb-old"
}

// leftContainer puts container id of the test pod in the sandbox sb.
func leftContainer(cri *fakeCRI, sb, id, name string, attempt uint32, state runtimeapi.ContainerState, exit int32) {
	cri.containers[id] = &runtimeapi.ContainerStatus{
		Id: id, Metadata: &runtimeapi.ContainerMetadata{Name: name, Attempt: attempt}, State: state, ExitCode: exit,
		Reason: "Unknown", StartedAt: 1, FinishedAt: 2,
		Labels: map[string]string{LabelPodUID: "u1", LabelPodName: "p", LabelPodNamespace: "default", LabelContainerName: name},
	}
	cri.sandboxOf[id] = sb
}

// TestAdoptedCreatedContainerRuns: a container created but never started
// (the node was killed between the two calls) is made again and runs,
// instead of leaving the pod in ContainerCreating.
func TestAdoptedCreatedContainerRuns(t *testing.T) {
	w, cri, _ := newTestWorker(t, "Always")
	sb := leftSandbox(cri, runtimeapi.PodSandboxState_SANDBOX_READY)
	leftContainer(cri, sb, "left", "c", 0, runtimeapi.ContainerState_CONTAINER_CREATED, 0)
	w.sync(context.Background())

	st := w.status()
	cs := st.ContainerStatuses[0]
	if st.Phase != "Running" || cs.State.GetRunning() == nil || cs.GetRestartCount() != 0 {
		t.Fatalf("status %s %v (restarts %d), want Running with the container running and no restart", st.Phase, cs.State, cs.GetRestartCount())
	}
	for id, c := range cri.containers {
		if c.State == runtimeapi.ContainerState_CONTAINER_CREATED {
			t.Errorf("container %s is still only created; calls %q", id, cri.calls.get())
		}
	}
	if len(cri.creates) != 1 || cri.creates[0].Metadata.Attempt != 0 || cri.calls.count("RunPodSandbox") != 0 {
		t.Errorf("calls %q: want the container made again in the same sandbox, as attempt 0", cri.calls.get())
	}
}

// TestNotReadySandboxIsReplaced: a sandbox that came back not ready (its
// network namespace gone after a reboot) is stopped and removed, and the
// pod gets a new one whose containers are made again with the next
// attempt number, except those that restartPolicy says are done.
func TestNotReadySandboxIsReplaced(t *testing.T) {
	tests := []struct {
		name        string
		policy      string
		exits       map[string]int32 // how the containers in the old sandbox ended
		wantCreates []string         // name/attempt
		wantPhase   string
		wantNew     bool // a new sandbox
	}{
		{name: "always", policy: "Always", exits: map[string]int32{"c": 255, "d": 0}, wantCreates: []string{"c/3", "d/3"}, wantPhase: "Running", wantNew: true},
		{name: "on failure keeps a success", policy: "OnFailure", exits: map[string]int32{"c": 255, "d": 0}, wantCreates: []string{"c/3"}, wantPhase: "Running", wantNew: true},
		{name: "never, all ended", policy: "Never", exits: map[string]int32{"c": 255, "d": 0}, wantPhase: "Failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, cri, _ := newTestWorker(t, tt.policy)
			w.pod.Spec.Containers = append(w.pod.Spec.Containers, &skiffv1.Container{Name: "d", Image: "hello"})
			w.pod.Status.Phase = "Running"
			sb := leftSandbox(cri, runtimeapi.PodSandboxState_SANDBOX_NOTREADY)
			for name, code := range tt.exits {
				leftContainer(cri, sb, "old-"+name, name, 2, runtimeapi.ContainerState_CONTAINER_EXITED, code)
			}
			w.sync(context.Background())
			w.sync(context.Background())

			var creates []string
			for _, c := range cri.creates {
				creates = append(creates, fmt.Sprintf("%s/%d", c.Metadata.Name, c.Metadata.Attempt))
				if want := fmt.Sprintf("%s/%d.log", c.Metadata.Name, c.Metadata.Attempt); c.LogPath != want {
					t.Errorf("container %s logs to %s, want %s", c.Metadata.Name, c.LogPath, want)
				}
			}
			slices.Sort(creates)
			if !slices.Equal(creates, tt.wantCreates) {
				t.Errorf("created %q, want %q; calls %q", creates, tt.wantCreates, cri.calls.get())
			}
			st := w.status()
			if st.Phase != tt.wantPhase {
				t.Errorf("phase %s, want %s; status %v", st.Phase, tt.wantPhase, st)
			}
			calls := cri.calls.get()
			if !tt.wantNew {
				if cri.calls.count("RunPodSandbox") != 0 || cri.calls.count("RemovePodSandbox") != 0 {
					t.Errorf("calls %q: want the old sandbox adopted as it is", calls)
				}
				return
			}
			want := []string{"StopPodSandbox sb-old", "RemovePodSandbox sb-old", "RunPodSandbox sb0"}
			if len(calls) < 3 || !slices.Equal(calls[:3], want) {
				t.Errorf("calls %q, want them to begin with %q", calls, want)
			}
			for _, cs := range st.ContainerStatuses {
				if cs.Name == "c" && (cs.GetRestartCount() != 3 || cs.LastState.GetTerminated().GetExitCode() != 255 || cs.State.GetRunning() == nil) {
					t.Errorf("container c: %v, want running after 3 restarts, last exit 255", cs)
				}
				if cs.Name == "d" && tt.policy == "OnFailure" && cs.State.GetTerminated().GetExitCode() != 0 {
					t.Errorf("container d: %v, want it kept as exited 0", cs)
				}
			}
		})
	}
}

// TestStartError: a start that fails ends the container with reason
// StartError, exit code 128 and the error's message, as the kubelet shows
// it; under Never the pod is then Failed and nothing runs again.
func TestStartError(t *testing.T) {
	const msg = "instantiate module: start function trapped: unreachable"
	t.Run("never", func(t *testing.T) {
		w, cri, now := newTestWorker(t, "Never")
		cri.startErr = status.Error(codes.Unknown, msg)
		w.sync(context.Background())
		*now = now.Add(time.Hour)
		w.sync(context.Background())
		st := w.status()
		term := st.ContainerStatuses[0].State.GetTerminated()
		if st.Phase != "Failed" || term.GetReason() != "StartError" || term.GetExitCode() != 128 || term.GetMessage() != msg {
			t.Errorf("status %s %v, want Failed with the container terminated StartError 128 %q", st.Phase, st.ContainerStatuses[0].State, msg)
		}
		if len(cri.creates) != 1 {
			t.Errorf("%d creates, want 1: no restart under Never", len(cri.creates))
		}
		if got := w.interval(); got != never {
			t.Errorf("a failed pod is looked at every %s, want only when woken", got)
		}
	})
	t.Run("always", func(t *testing.T) {
		w, cri, _ := newTestWorker(t, "Always")
		cri.startErr = status.Error(codes.Unknown, msg)
		w.sync(context.Background())
		st := w.status()
		cs := st.ContainerStatuses[0]
		last := cs.LastState.GetTerminated()
		if st.Phase != "Running" || cs.State.GetWaiting().GetReason() != "CrashLoopBackOff" || last.GetReason() != "StartError" || last.GetExitCode() != 128 || last.GetMessage() != msg {
			t.Errorf("status %s %v last %v, want CrashLoopBackOff with the StartError kept as last state", st.Phase, cs.State, cs.LastState)
		}
	})
}

// listedPods answers List with its pods.
type listedPods struct {
	skiffv1connect.PodServiceClient
	pods []*skiffv1.Pod
}

func (f *listedPods) List(context.Context, *connect.Request[skiffv1.ListRequest]) (*connect.Response[skiffv1.PodList], error) {
	return connect.NewResponse(&skiffv1.PodList{Items: f.pods, ResourceVersion: 7}), nil
}

// TestStaleDirsRemoved: the log and volume directories of pods that are
// gone (deleted just before the node was killed) are removed when the
// agent lists its pods, and on the PLEG's relists; those of pods bound
// here or of sandboxes the CRI still has stay.
func TestStaleDirsRemoved(t *testing.T) {
	cri := newFakeCRI()
	logs, vols := t.TempDir(), t.TempDir()
	a := New(Config{NodeName: "n", Runtime: cri, Images: cri, LogDir: logs, VolumeDir: vols, Logger: slog.New(slog.DiscardHandler),
		Pods: &listedPods{pods: []*skiffv1.Pod{{Metadata: &skiffv1.ObjectMeta{Name: "keep", Namespace: "default", Uid: "u1"}}}}})
	cri.sandboxes = []*runtimeapi.PodSandbox{{Id: "sb9", Metadata: &runtimeapi.PodSandboxMetadata{Name: "known", Namespace: "default", Uid: "u3"}}}
	mk := func(p string) {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"default_keep_u1/c", "default_gone_u2/c", "default_known_u3/c", "not-a-pod"} {
		mk(filepath.Join(logs, d))
	}
	for _, d := range []string{"u1/data", "u2/data", "u3/data"} {
		mk(filepath.Join(vols, d))
	}
	if _, err := a.relist(context.Background(), map[string]*podWorker{}, func(*skiffv1.Pod, bool) {}, true); err != nil {
		t.Fatal(err)
	}
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	for _, d := range []string{"default_keep_u1", "default_known_u3", "not-a-pod"} {
		if !exists(filepath.Join(logs, d)) {
			t.Errorf("log directory %s was removed", d)
		}
	}
	for _, d := range []string{"u1", "u3"} {
		if !exists(filepath.Join(vols, d)) {
			t.Errorf("volume directory %s was removed", d)
		}
	}
	if exists(filepath.Join(logs, "default_gone_u2")) || exists(filepath.Join(vols, "u2")) {
		t.Errorf("the directories of pod u2, gone, are still there")
	}

	// Later, pod u4 goes with the node down; the PLEG's relist finds it.
	mk(filepath.Join(logs, "default_late_u4", "c"))
	mk(filepath.Join(vols, "u4"))
	pl := newPLEG(a)
	pl.register("u1", &podWorker{})
	pl.collectDirs(context.Background())
	if exists(filepath.Join(logs, "default_late_u4")) || exists(filepath.Join(vols, "u4")) {
		t.Errorf("the directories of pod u4, gone, are still there after a relist")
	}
	if !exists(filepath.Join(logs, "default_keep_u1")) || !exists(filepath.Join(vols, "u1")) {
		t.Errorf("the directories of pod u1, bound here, were removed by a relist")
	}
}

// TestDeleteWhileStartBlocks: deleting a pod whose container's start never
// returns does not wait on it: the container is stopped with the grace
// period, then the sandbox, and the deletion confirmed, while the start
// is in flight; the start is cancelled once the sandbox is gone. The
// start has a deadline of its own.
func TestDeleteWhileStartBlocks(t *testing.T) {
	w, cri, now := newTestWorker(t, "Always")
	pods := newFakePods(w, cri)
	cri.startBlocks = true
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.run(ctx)
	eventually(t, 5*time.Second, func() bool { return cri.calls.count("StartContainer c1 blocks") == 1 },
		func() string { return "the start never began" })
	cri.mu.Lock()
	hadDeadline := cri.startDeadline
	cri.mu.Unlock()
	if !hadDeadline {
		t.Errorf("StartContainer was called without a deadline")
	}

	pods.mu.Lock()
	p := proto.Clone(pods.pod).(*skiffv1.Pod)
	pods.mu.Unlock()
	markDeleted(p, now.Add(30*time.Second), 30)
	w.update(p, false)
	eventually(t, 5*time.Second, func() bool { return pods.deleteCount() > 0 },
		func() string { return fmt.Sprintf("deletion not confirmed; calls %q", cri.calls.get()) })

	calls := cri.calls.get()
	stop := slices.Index(calls, "StopContainer c1 timeout=30")
	sbStop := slices.Index(calls, "StopPodSandbox sb0")
	sbRemove := slices.Index(calls, "RemovePodSandbox sb0")
	del := slices.Index(calls, "Delete default/p uid=u1 grace=0")
	if stop < 0 || sbStop < stop || sbRemove < sbStop || del < sbRemove {
		t.Errorf("calls %q: want the container stopped with its grace, then the sandbox stopped and removed, then the deletion confirmed", calls)
	}
	if ret := slices.Index(calls, "StartContainer c1 returned"); ret >= 0 && ret < sbRemove {
		t.Errorf("calls %q: the start returned before the sandbox was removed; want the termination not to wait on it", calls)
	}
	w.update(nil, true)
	<-w.done
	eventually(t, 5*time.Second, func() bool { return cri.calls.count("StartContainer c1 returned") == 1 },
		func() string { return "the start left in flight was never cancelled" })
}
