package cri

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/runtime/image/imagetest"
	"skiff.dev/skiff/runtime/oci"
	"skiff.dev/skiff/runtime/pidns"
	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

func TestWantsPodPID(t *testing.T) {
	withNS := func(ns *runtime.NamespaceOption) *runtime.PodSandboxConfig {
		return &runtime.PodSandboxConfig{Linux: &runtime.LinuxPodSandboxConfig{SecurityContext: &runtime.LinuxSandboxSecurityContext{NamespaceOptions: ns}}}
	}
	for _, tc := range []struct {
		name string
		cfg  *runtime.PodSandboxConfig
		want bool
	}{
		{"no linux config (crictl, skiff's agent)", &runtime.PodSandboxConfig{}, false},
		{"no namespace options", withNS(nil), false},
		{"pid POD", withNS(&runtime.NamespaceOption{Pid: runtime.NamespaceMode_POD}), true},
		{"ipc NODE, pid POD by default", withNS(&runtime.NamespaceOption{Ipc: runtime.NamespaceMode_NODE}), true},
		{"pid CONTAINER (the kubelet's default)", withNS(&runtime.NamespaceOption{Pid: runtime.NamespaceMode_CONTAINER}), false},
		{"pid NODE", withNS(&runtime.NamespaceOption{Pid: runtime.NamespaceMode_NODE}), false},
	} {
		if got := wantsPodPID(tc.cfg); got != tc.want {
			t.Errorf("%s: wantsPodPID = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestPodPIDNamespaceRunc: in a sandbox asking for pid POD, two busybox
// containers share one PID namespace whose PID 1 is the holder, named
// pause: one sees the other's sleep in ps; a container asking for
// CONTAINER has its own. RemovePodSandbox ends the holder.
func TestPodPIDNamespaceRunc(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("skipped: runc not found (install the Debian package runc)")
	}
	e := newEnv(t, true)
	rt, err := oci.New(oci.Config{Root: t.TempDir(), CgroupParent: "skiff-cri-test"})
	if err != nil {
		t.Fatal(err)
	}
	e.svc.runtimes[HandlerRunc] = rt // closed with the service
	ctx := context.Background()
	archive := imagetest.DockerArchive(t, "busybox:latest", imagetest.BusyboxImage(t))
	if _, err := e.images.ImportArchive(ctx, "busybox", bytes.NewReader(archive)); err != nil {
		t.Fatal(err)
	}
	cfg := podConfig("shared", "")
	cfg.Linux = &runtime.LinuxPodSandboxConfig{SecurityContext: &runtime.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtime.NamespaceOption{Pid: runtime.NamespaceMode_POD},
	}}
	resp, err := e.rs.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: cfg, RuntimeHandler: HandlerRunc})
	if err != nil {
		t.Fatal(err)
	}
	pod := resp.PodSandboxId
	t.Cleanup(func() {
		e.rs.RemovePodSandbox(context.Background(), &runtime.RemovePodSandboxRequest{PodSandboxId: pod})
	})
	h := *e.svc.sandboxes[pod].snapshot().PIDHolder
	t.Cleanup(func() { pidns.Stop(context.Background(), h) })

	run := func(name string, pid runtime.NamespaceMode, command ...string) string {
		c := &runtime.ContainerConfig{
			Metadata: &runtime.ContainerMetadata{Name: name},
			Image:    &runtime.ImageSpec{Image: "busybox"},
			Command:  command,
			Linux: &runtime.LinuxContainerConfig{SecurityContext: &runtime.LinuxContainerSecurityContext{
				NamespaceOptions: &runtime.NamespaceOption{Pid: pid},
			}},
		}
		id := e.mustCreate(pod, c)
		e.start(id)
		e.waitState(id, runtime.ContainerState_CONTAINER_RUNNING)
		return id
	}
	execOut := func(id string, cmd ...string) string {
		t.Helper()
		r, err := e.rs.ExecSync(ctx, &runtime.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 10})
		if err != nil || r.ExitCode != 0 {
			t.Fatalf("exec %q in %s: %v, %+v", cmd, id, err, r)
		}
		return string(r.Stdout)
	}
	a := run("a", runtime.NamespaceMode_POD, "sleep", "1001")
	b := run("b", runtime.NamespaceMode_POD, "sleep", "1002")
	own := run("own", runtime.NamespaceMode_CONTAINER, "sleep", "1003")

	if got := execOut(a, "cat", "/proc/1/cmdline"); got != "pause\x00" {
		t.Errorf("a: /proc/1/cmdline = %q, want the holder's %q", got, "pause\x00")
	}
	var ps string
	wasmtest.Eventually(t, 10*time.Second, func() bool { ps = execOut(a, "ps", "-o", "pid,args"); return strings.Contains(ps, "sleep 1002") },
		func() string { return "a's ps does not show b's sleep:\n" + ps })
	if !strings.Contains(ps, "    1 pause") && !strings.Contains(ps, " 1 pause") {
		t.Errorf("a's ps does not show pause as PID 1:\n%s", ps)
	}
	if strings.Contains(ps, "sleep 1003") {
		t.Errorf("a's ps shows the sleep of a container with a PID namespace of its own:\n%s", ps)
	}
	if got := execOut(b, "ps", "-o", "args"); !strings.Contains(got, "sleep 1001") {
		t.Errorf("b's ps does not show a's sleep:\n%s", got)
	}
	if got := execOut(own, "cat", "/proc/1/cmdline"); got != "sleep\x001003\x00" {
		t.Errorf("own: /proc/1/cmdline = %q, want its own sleep", got)
	}

	if _, err := e.rs.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	if err := pidns.Check(h); !errors.Is(err, pidns.ErrGone) {
		t.Errorf("holder after RemovePodSandbox: Check = %v, want gone", err)
	}
	wasmtest.Eventually(t, 10*time.Second, func() bool {
		_, err := os.Stat("/proc/" + strconv.Itoa(h.PID))
		return errors.Is(err, os.ErrNotExist)
	}, func() string { return "the holder's process is still there after RemovePodSandbox" })
}
