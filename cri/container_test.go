package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

// logLine matches one CRI log entry.
var logLine = regexp.MustCompile(`^(\S+) (stdout|stderr) ([PF]) (.*)$`)

// readLog parses a CRI log file into "stream tag content" lines, checking
// the timestamps.
func readLog(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if line == "" {
			continue
		}
		m := logLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("log line %q is not in the CRI format", line)
		}
		if _, err := time.Parse(time.RFC3339Nano, m[1]); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m[2]+" "+m[3]+" "+m[4])
	}
	return out
}

func TestContainerLifecycle(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	img := e.importImage("writer", wasmtest.Build(
		wasmtest.Write(1, "hello out\n"),
		wasmtest.Write(2, "hello err\n"),
		wasmtest.Write(1, "no newline"),
		wasmtest.Sleep(time.Hour),
	))
	pod := e.runPod("p")
	cfg := containerConfig("writer", "writer")
	cfg.Annotations = map[string]string{"a": "b"}
	id := e.mustCreate(pod, cfg)
	if !idPattern.MatchString(id) {
		t.Fatalf("container ID %q", id)
	}
	st := e.status(id)
	if st.State != runtime.ContainerState_CONTAINER_CREATED || st.CreatedAt == 0 || st.StartedAt != 0 {
		t.Errorf("after create: %v", st)
	}
	wantLog := filepath.Join(e.logDir, "p", "writer.log")
	if st.LogPath != wantLog || st.ImageRef != img.ID || st.Image.GetImage() != "writer" ||
		st.Labels["container"] != "writer" || st.Annotations["a"] != "b" || st.Metadata.Name != "writer" {
		t.Errorf("status = %v", st)
	}

	e.start(id)
	st = e.waitState(id, runtime.ContainerState_CONTAINER_RUNNING)
	if st.StartedAt == 0 {
		t.Error("StartedAt not set")
	}
	_, err := e.rs.StartContainer(ctx, &runtime.StartContainerRequest{ContainerId: id})
	wantCode(t, err, codes.FailedPrecondition, "running")

	want := []string{"stdout F hello out", "stderr F hello err", "stdout P no newline"}
	var got []string
	wasmtest.Eventually(t, 5*time.Second, func() bool { got = readLog(t, wantLog); return strings.Join(got, "|") == strings.Join(want, "|") },
		func() string { return fmt.Sprintf("log = %q, want %q", got, want) })

	if _, err := e.rs.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: id, Timeout: 0}); err != nil {
		t.Fatal(err)
	}
	st = e.status(id)
	if st.State != runtime.ContainerState_CONTAINER_EXITED || st.ExitCode != 137 || st.Reason != "Error" || st.Message != "stopped" || st.FinishedAt < st.StartedAt {
		t.Errorf("after stop: %v", st)
	}
	if _, err := e.rs.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: id}); err != nil {
		t.Errorf("second StopContainer = %v", err)
	}

	if _, err := e.rs.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rs.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Errorf("second RemoveContainer = %v", err)
	}
	_, err = e.rs.ContainerStatus(ctx, &runtime.ContainerStatusRequest{ContainerId: id})
	wantCode(t, err, codes.NotFound, id)
	// The CRI spec: stopping a container that is gone is not an error.
	if _, err := e.rs.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: id}); err != nil {
		t.Errorf("StopContainer of a removed container = %v, want success", err)
	}
	if _, err := os.Stat(wantLog); err != nil {
		t.Errorf("log removed with the container: %v", err)
	}
}

func TestGoProgramArgvAndEnv(t *testing.T) {
	e := newEnv(t, false)
	e.importFile("hello", needHello(t))
	pod := e.runPod("p")
	tests := []struct {
		name string
		cfg  *runtime.ContainerConfig
		want string
	}{
		{name: "name is argv0", cfg: containerConfig("greeter", "hello"), want: "stdout F Hello from greeter!"},
		{name: "command", cfg: func() *runtime.ContainerConfig {
			c := containerConfig("cmd", "hello:latest")
			c.Command = []string{"/bin/prog"}
			c.Envs = []*runtime.KeyValue{{Key: "GREETING", Value: []byte("Ahoy")}}
			return c
		}(), want: "stdout F Ahoy from /bin/prog!"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := e.mustCreate(pod, tt.cfg)
			e.start(id)
			st := e.waitState(id, runtime.ContainerState_CONTAINER_EXITED)
			if st.ExitCode != 0 || st.Reason != "Completed" {
				t.Errorf("status = %v", st)
			}
			if got := readLog(t, st.LogPath); len(got) != 1 || got[0] != tt.want {
				t.Errorf("log = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestExitReasons runs containers that trap, exit non-zero and complete,
// next to one that keeps running.
func TestExitReasons(t *testing.T) {
	e := newEnv(t, false)
	e.importImage("sleeper", wasmtest.Build(wasmtest.Sleep(time.Hour)))
	e.importImage("trap", wasmtest.Build(wasmtest.Write(1, "about to trap\n"), wasmtest.Trap()))
	e.importImage("exit3", wasmtest.Build(wasmtest.Exit(3)))
	e.importImage("ok", wasmtest.Build(wasmtest.Write(1, "done\n")))
	pod := e.runPod("p")
	sleeper := e.mustCreate(pod, containerConfig("sleeper", "sleeper"))
	e.start(sleeper)

	tests := []struct {
		image   string
		code    int32
		reason  string
		message string
	}{
		{image: "trap", code: 134, reason: "Error", message: "wasm error: unreachable"},
		{image: "exit3", code: 3, reason: "Error"},
		{image: "ok", code: 0, reason: "Completed"},
	}
	for _, tt := range tests {
		t.Run(tt.image, func(t *testing.T) {
			id := e.mustCreate(pod, containerConfig(tt.image, tt.image))
			e.start(id)
			st := e.waitState(id, runtime.ContainerState_CONTAINER_EXITED)
			if st.ExitCode != tt.code || st.Reason != tt.reason || st.Message != tt.message || st.FinishedAt == 0 {
				t.Errorf("status = exit %d reason %q message %q; want %d %q %q", st.ExitCode, st.Reason, st.Message, tt.code, tt.reason, tt.message)
			}
		})
	}
	if st := e.status(sleeper); st.State != runtime.ContainerState_CONTAINER_RUNNING {
		t.Errorf("sleeper is %v after its neighbours died", st.State)
	}
}

func TestCreateContainerRejects(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	e.importImage("bad", []byte("\x00asm\x01\x00\x00\x00this is not a module"))
	e.importImage("ok", wasmtest.Build())
	pod := e.runPod("p")
	stopped := e.runPod("stopped")
	if _, err := e.rs.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: stopped}); err != nil {
		t.Fatal(err)
	}
	e.mustCreate(pod, containerConfig("taken", "ok"))

	escape := containerConfig("escape", "ok")
	escape.LogPath = "../../etc/evil.log"
	tests := []struct {
		name  string
		pod   string
		cfg   *runtime.ContainerConfig
		code  codes.Code
		parts []string
	}{
		{name: "invalid module", pod: pod, cfg: containerConfig("bad", "bad"), code: codes.InvalidArgument, parts: []string{"invalid WebAssembly module", "section"}},
		{name: "missing image", pod: pod, cfg: containerConfig("x", "nope"), code: codes.NotFound, parts: []string{`image "nope" is not in the node's image store`}},
		{name: "no image", pod: pod, cfg: containerConfig("x", ""), code: codes.InvalidArgument, parts: []string{"config.image.image is required"}},
		{name: "no name", pod: pod, cfg: &runtime.ContainerConfig{Image: &runtime.ImageSpec{Image: "ok"}}, code: codes.InvalidArgument, parts: []string{"config.metadata.name is required"}},
		{name: "unknown sandbox", pod: "f00d", cfg: containerConfig("x", "ok"), code: codes.NotFound, parts: []string{`sandbox "f00d"`}},
		{name: "sandbox not ready", pod: stopped, cfg: containerConfig("x", "ok"), code: codes.FailedPrecondition, parts: []string{"is not ready"}},
		{name: "name taken", pod: pod, cfg: containerConfig("taken", "ok"), code: codes.AlreadyExists, parts: []string{`"taken"`}},
		{name: "log path escapes", pod: pod, cfg: escape, code: codes.InvalidArgument, parts: []string{"leaves the sandbox log directory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.create(tt.pod, tt.cfg)
			wantCode(t, err, tt.code, tt.parts...)
		})
	}
	// Nothing was left behind: one container, one log file, and the
	// rejected names are free.
	list, _ := e.rs.ListContainers(ctx, &runtime.ListContainersRequest{})
	if len(list.Containers) != 1 {
		t.Errorf("%d containers, want 1", len(list.Containers))
	}
	logs, _ := os.ReadDir(filepath.Join(e.logDir, "p"))
	if len(logs) != 1 {
		t.Errorf("log dir holds %d files, want 1 (taken.log)", len(logs))
	}
	e.importImage("bad", wasmtest.Build())
	e.mustCreate(pod, containerConfig("bad", "bad"))
}

func TestListContainersFilters(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	e.importImage("sleeper", wasmtest.Build(wasmtest.Sleep(time.Hour)))
	p1, p2 := e.runPod("p1"), e.runPod("p2")
	a := e.mustCreate(p1, containerConfig("a", "sleeper"))
	b := e.mustCreate(p1, containerConfig("b", "sleeper"))
	c := e.mustCreate(p2, containerConfig("c", "sleeper"))
	e.start(a)
	running := &runtime.ContainerStateValue{State: runtime.ContainerState_CONTAINER_RUNNING}
	created := &runtime.ContainerStateValue{State: runtime.ContainerState_CONTAINER_CREATED}
	tests := []struct {
		name   string
		filter *runtime.ContainerFilter
		want   []string
	}{
		{name: "all", want: []string{a, b, c}},
		{name: "id", filter: &runtime.ContainerFilter{Id: b}, want: []string{b}},
		{name: "id prefix", filter: &runtime.ContainerFilter{Id: c[:10]}, want: []string{c}},
		{name: "sandbox", filter: &runtime.ContainerFilter{PodSandboxId: p1}, want: []string{a, b}},
		{name: "running", filter: &runtime.ContainerFilter{State: running}, want: []string{a}},
		{name: "created in p1", filter: &runtime.ContainerFilter{State: created, PodSandboxId: p1}, want: []string{b}},
		{name: "label", filter: &runtime.ContainerFilter{LabelSelector: map[string]string{"container": "c"}}, want: []string{c}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := e.rs.ListContainers(ctx, &runtime.ListContainersRequest{Filter: tt.filter})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range resp.Containers {
				got = append(got, c.Id)
			}
			if !equalSets(got, tt.want) || len(got) != len(tt.want) {
				t.Errorf("got %d %v, want %v", len(got), got, tt.want)
			}
		})
	}
}

// TestStopPodSandboxStopsContainers checks that stopping a pod kills its
// containers at once, even one that would stop when asked, and that
// removing it removes them.
func TestStopPodSandboxStopsContainers(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	e.importImage("spin", wasmtest.Build(wasmtest.Spin()))
	e.importFile("hello", needHello(t))
	pod := e.runPod("p")
	running := e.mustCreate(pod, containerConfig("running", "spin"))
	created := e.mustCreate(pod, containerConfig("created", "spin"))
	cooperative := e.mustCreate(pod, containerConfig("cooperative", "hello", "wait-stdin", "terminating"))
	e.start(running)
	e.start(cooperative)
	logPath := e.waitLog(cooperative, "stdout F Hello from cooperative!")
	if _, err := e.rs.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{running, created, cooperative} {
		if st := e.status(id); st.State != runtime.ContainerState_CONTAINER_EXITED || st.ExitCode != 137 || st.Message != "stopped" {
			t.Errorf("container %s after StopPodSandbox: %v", id, st)
		}
	}
	if got := readLog(t, logPath); len(got) != 1 {
		t.Errorf("log of the killed container = %q, want only the greeting", got)
	}
	_, err := e.rs.StartContainer(ctx, &runtime.StartContainerRequest{ContainerId: created})
	wantCode(t, err, codes.FailedPrecondition)
	if _, err := e.rs.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	list, _ := e.rs.ListContainers(ctx, &runtime.ListContainersRequest{})
	if len(list.Containers) != 0 {
		t.Errorf("containers left after RemovePodSandbox: %v", list.Containers)
	}
}

// TestStopContainerTimeout stops running containers through the CRI with
// a timeout: a module that returns when its stdin ends keeps its own exit
// and the call returns at once; one that ignores it is killed when the
// timeout ends; a timeout of 0 kills at once.
func TestStopContainerTimeout(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	e.importFile("hello", needHello(t))
	pod := e.runPod("p")
	tests := []struct {
		name    string
		args    []string
		timeout int64
		code    int32
		reason  string
		message string
		log     []string // after the greeting
		killed  bool     // at the end of the timeout, not before
	}{
		{name: "exits when asked", args: []string{"wait-stdin", "terminating"}, timeout: 30,
			code: 0, reason: "Completed", log: []string{"stdout F terminating"}},
		{name: "exits with its code", args: []string{"wait-stdin", "terminating", "exit", "3"}, timeout: 30,
			code: 3, reason: "Error", log: []string{"stdout F terminating"}},
		{name: "ignores the request", args: []string{"sleep", "1h"}, timeout: 1,
			code: 137, reason: "Error", message: "stopped: did not exit within the 1s grace period", killed: true},
		{name: "timeout 0", args: []string{"wait-stdin", "terminating"}, timeout: 0,
			code: 137, reason: "Error", message: "stopped"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprint("c", i)
			id := e.mustCreate(pod, containerConfig(name, "hello", tt.args...))
			e.start(id)
			greeting := "stdout F Hello from " + name + "!"
			logPath := e.waitLog(id, greeting)
			start := time.Now()
			if _, err := e.rs.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: id, Timeout: tt.timeout}); err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			t.Logf("StopContainer(timeout %ds) returned after %v", tt.timeout, took)
			st := e.status(id)
			if st.State != runtime.ContainerState_CONTAINER_EXITED || st.ExitCode != tt.code || st.Reason != tt.reason || st.Message != tt.message {
				t.Errorf("status = %v; want exited %d %q %q", st, tt.code, tt.reason, tt.message)
			}
			if got, want := readLog(t, logPath), append([]string{greeting}, tt.log...); strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("log = %q, want %q", got, want)
			}
			grace := time.Duration(tt.timeout) * time.Second
			switch {
			case tt.killed && took < grace:
				t.Errorf("killed after %v, before the %v timeout", took, grace)
			case !tt.killed && grace > 0 && took > grace/2:
				t.Errorf("StopContainer returned after %v; the module stopped when asked, well within %v", took, grace)
			}
		})
	}
}

// TestRemoveRunningPod removes a pod without stopping it first.
func TestRemoveRunningPod(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	e.importImage("spin", wasmtest.Build(wasmtest.Spin()))
	pod := e.runPod("p")
	id := e.mustCreate(pod, containerConfig("c", "spin"))
	e.start(id)
	if _, err := e.rs.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	list, _ := e.rs.ListContainers(ctx, &runtime.ListContainersRequest{})
	pods, _ := e.rs.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
	if len(list.Containers) != 0 || len(pods.Items) != 0 || e.ns.(*fakeNamespaces).count() != 0 {
		t.Errorf("left: %d containers, %d pods, %d namespaces", len(list.Containers), len(pods.Items), e.ns.(*fakeNamespaces).count())
	}
}

func TestRestart(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	e.importImage("sleeper", wasmtest.Build(wasmtest.Sleep(time.Hour)))
	e.importImage("exit3", wasmtest.Build(wasmtest.Exit(3)))
	e.importImage("hi", wasmtest.Build(wasmtest.Write(1, "hi\n")))
	pod := e.runPod("p")
	running := e.mustCreate(pod, containerConfig("running", "sleeper"))
	e.start(running)
	exited := e.mustCreate(pod, containerConfig("exited", "exit3"))
	e.start(exited)
	e.waitState(exited, runtime.ContainerState_CONTAINER_EXITED)
	created := e.mustCreate(pod, containerConfig("created", "hi"))
	// A pin left by a crash inside RunPodSandbox.
	orphan, _ := e.ns.Create("orphan")

	e.restart()

	st := e.status(running)
	if st.State != runtime.ContainerState_CONTAINER_EXITED || st.ExitCode != 255 || st.Reason != "Unknown" || st.Message != "runtime restarted" {
		t.Errorf("running container after restart: %v", st)
	}
	if st := e.status(exited); st.ExitCode != 3 || st.Reason != "Error" {
		t.Errorf("exited container after restart: %v", st)
	}
	if st := e.status(created); st.State != runtime.ContainerState_CONTAINER_CREATED {
		t.Errorf("created container after restart: %v", st)
	}
	if e.ns.IsPinned(orphan) {
		t.Error("orphaned namespace pin survived the restart")
	}
	sb, err := e.rs.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: pod})
	if err != nil || sb.Status.State != runtime.PodSandboxState_SANDBOX_READY {
		t.Fatalf("sandbox after restart: %v, %v", sb, err)
	}
	// The created container still starts, and logs where it did.
	e.start(created)
	st = e.waitState(created, runtime.ContainerState_CONTAINER_EXITED)
	if st.ExitCode != 0 || readLog(t, st.LogPath)[0] != "stdout F hi" {
		t.Errorf("created container started after restart: %v", st)
	}
	// Names stay reserved across the restart.
	_, err = e.create(pod, containerConfig("running", "sleeper"))
	wantCode(t, err, codes.AlreadyExists)
	_, err = e.rs.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: podConfig("p", "")})
	wantCode(t, err, codes.AlreadyExists)

	// A sandbox whose namespace vanished (a reboot) is not ready.
	e.ns.(*fakeNamespaces).Delete(e.svc.sandboxes[pod].rec.NetNSPath)
	e.restart()
	sb, _ = e.rs.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: pod})
	if sb.GetStatus().GetState() != runtime.PodSandboxState_SANDBOX_NOTREADY {
		t.Errorf("sandbox without its namespace after restart: %v", sb.GetStatus().GetState())
	}
}

// TestConcurrentPods hammers the service with whole pod lifecycles from
// several goroutines, plus readers.
func TestConcurrentPods(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	e.importImage("sleep", wasmtest.Build(wasmtest.Sleep(time.Hour)))
	e.importImage("quick", wasmtest.Build(wasmtest.Write(1, "hi\n")))
	const workers = 8
	var wg sync.WaitGroup
	stop := make(chan struct{})
	readers := sync.WaitGroup{}
	readers.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			e.rs.ListContainers(ctx, &runtime.ListContainersRequest{})
			e.rs.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
		}
	})
	for w := range workers {
		wg.Go(func() {
			for i := range 3 {
				resp, err := e.rs.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: podConfig(fmt.Sprintf("w%d-%d", w, i), e.logDir)})
				if err != nil {
					t.Error(err)
					return
				}
				pod := resp.PodSandboxId
				var ids []string
				for _, img := range []string{"sleep", "quick"} {
					id, err := e.create(pod, containerConfig(img, img))
					if err != nil {
						t.Error(err)
						return
					}
					ids = append(ids, id)
					readers.Go(func() { e.rs.ContainerStatus(ctx, &runtime.ContainerStatusRequest{ContainerId: id}) })
					if _, err := e.rs.StartContainer(ctx, &runtime.StartContainerRequest{ContainerId: id}); err != nil {
						t.Error(err)
					}
				}
				// Race a stop of one container against the pod's removal.
				done := make(chan struct{})
				go func() {
					e.rs.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: ids[0]})
					close(done)
				}()
				if _, err := e.rs.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
					t.Error(err)
				}
				<-done
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	list, _ := e.rs.ListContainers(ctx, &runtime.ListContainersRequest{})
	pods, _ := e.rs.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
	if len(list.Containers) != 0 || len(pods.Items) != 0 {
		t.Errorf("left: %d containers, %d pods", len(list.Containers), len(pods.Items))
	}
}

// TestReopenContainerLog: a running container's log file, moved away, is
// made again by ReopenContainerLog; a container that is not running is
// refused and gets no file.
func TestReopenContainerLog(t *testing.T) {
	e := newEnv(t, false)
	e.importFile("hello", needHello(t))
	pod := e.runPod("reopen")
	id := e.mustCreate(pod, containerConfig("c", "hello", "sleep", "1h"))
	ctx := context.Background()
	_, err := e.rs.ReopenContainerLog(ctx, &runtime.ReopenContainerLogRequest{ContainerId: id})
	wantCode(t, err, codes.FailedPrecondition, "not running")
	e.start(id)
	path := e.status(id).LogPath
	if err := os.Rename(path, path+".moved"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rs.ReopenContainerLog(ctx, &runtime.ReopenContainerLogRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the log file was not made again: %v", err)
	}
	if _, err := e.rs.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	_, err = e.rs.ReopenContainerLog(ctx, &runtime.ReopenContainerLogRequest{ContainerId: id})
	wantCode(t, err, codes.FailedPrecondition, "not running")
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("a refused reopen made the log file: %v", err)
	}
}
