package oci

import (
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"skiff.dev/skiff/netns"
	skiffrt "skiff.dev/skiff/runtime"
)

func TestSharedNetworkNamespace(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	layer := busyboxLayer(t)
	nsDir := t.TempDir()
	path, err := netns.Create(nsDir, "pod")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Delete(path) })
	ctx := context.Background()

	var got syncBuffer
	server := create(t, r, skiffrt.ContainerSpec{ID: newID(t) + "-server", Layers: []string{layer}, NetNSPath: path,
		// nc ends when its input does: the input stays open a while
		// after pong, so that the client's ping is read first.
		Args: []string{"sh", "-c", "{ echo pong; sleep 2; } | nc -l -p 8080"}, Stdout: &got})
	if err := server.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var reply syncBuffer
	client := create(t, r, skiffrt.ContainerSpec{ID: newID(t) + "-client", Layers: []string{layer}, NetNSPath: path,
		Args: []string{"sh", "-c", "until echo ping | nc 127.0.0.1 8080; do sleep 0.1; done"}, Stdout: &reply})
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitDone(t, client, 30*time.Second)
	waitDone(t, server, 30*time.Second)
	if reply.String() != "pong\n" || got.String() != "ping\n" {
		t.Errorf("client got %q, server got %q; want pong and ping", reply.String(), got.String())
	}
}

func TestExec(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	c := create(t, r, skiffrt.ContainerSpec{ID: newID(t), Layers: []string{busyboxLayer(t)}, Hostname: "exec-box", User: "user",
		Env: []string{"A=1"}, Args: []string{"sleep", "1000"}})
	ctx := context.Background()
	if _, err := c.Exec(ctx, skiffrt.Process{Args: []string{"true"}}); !errors.Is(err, skiffrt.ErrState) {
		t.Errorf("Exec before Start: %v, want ErrState", err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var out, errOut syncBuffer
	code, err := c.Exec(ctx, skiffrt.Process{
		Args:  []string{"sh", "-c", `echo "$(hostname) $A $B $(id -u)"; cat; echo oops >&2; exit 5`},
		Env:   []string{"B=2"},
		Stdin: strings.NewReader("from stdin\n"), Stdout: &out, Stderr: &errOut,
	})
	if err != nil || code != 5 {
		t.Fatalf("Exec = %d, %v; want 5", code, err)
	}
	if out.String() != "exec-box 1 2 1000\nfrom stdin\n" || errOut.String() != "oops\n" {
		t.Errorf("stdout %q, stderr %q", out.String(), errOut.String())
	}
	if _, err := c.Exec(ctx, skiffrt.Process{Args: []string{"no-such-command"}}); err == nil {
		t.Errorf("Exec of a missing command: no error")
	}
	// A command that exits while its client's stdin is still open ends
	// the call with its exit code (the client's input is dropped).
	openIn, openW := io.Pipe()
	defer openW.Close()
	if code, err := c.Exec(ctx, skiffrt.Process{Args: []string{"sh", "-c", "exit 4"}, Stdin: openIn}); err != nil || code != 4 {
		t.Errorf("Exec with stdin left open = %d, %v; want 4", code, err)
	}
	openIn.Close()
	// Ending ctx kills the process.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	begin := time.Now()
	if _, err := c.Exec(short, skiffrt.Process{Args: []string{"sleep", "1000"}}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Exec cut short: %v, want DeadlineExceeded", err)
	}
	if took := time.Since(begin); took > 10*time.Second {
		t.Errorf("Exec cut short took %v", took)
	}
	if st := c.Status(); st.State != skiffrt.StateRunning {
		t.Errorf("container after the execs: %+v, want running", st)
	}
}

func TestRemoveLeavesNothing(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	ctx := context.Background()
	id := newID(t)
	c, err := r.create(ctx, skiffrt.ContainerSpec{ID: id, Layers: []string{busyboxLayer(t)}, MemoryLimit: 64 << 20, Args: []string{"sleep", "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeContainer(t, c) })
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.MemoryBytes == 0 {
		t.Errorf("Stats of a running container: %+v, want memory in use", st)
	}
	if err := c.Remove(ctx); !errors.Is(err, skiffrt.ErrState) {
		t.Errorf("Remove while running: %v, want ErrState", err)
	}
	if err := c.Stop(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(ctx); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if left := leftovers(r, id); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	// A created container is killed and removed.
	id2 := newID(t)
	c2, err := r.create(ctx, skiffrt.ContainerSpec{ID: id2, Layers: []string{busyboxLayer(t)}, Args: []string{"sleep", "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(r, id2); len(left) > 0 {
		t.Errorf("left behind by a created container: %v", left)
	}
}

func TestBadSpecs(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	layer := busyboxLayer(t)
	good := func() skiffrt.ContainerSpec {
		return skiffrt.ContainerSpec{ID: newID(t), Layers: []string{layer}, Args: []string{"true"}}
	}
	for _, tc := range []struct {
		name, field string
		change      func(*skiffrt.ContainerSpec)
	}{
		{"no args", "args", func(s *skiffrt.ContainerSpec) { s.Args = nil }},
		{"empty arg", "args[1]", func(s *skiffrt.ContainerSpec) { s.Args = []string{"echo", ""} }},
		{"no layers", "layers", func(s *skiffrt.ContainerSpec) { s.Layers = nil }},
		{"missing layer", "layers[0]", func(s *skiffrt.ContainerSpec) { s.Layers = []string{"/nonexistent"} }},
		{"relative mount", "mounts[0].containerPath", func(s *skiffrt.ContainerSpec) {
			s.Mounts = []skiffrt.Mount{{HostPath: "/tmp", ContainerPath: "data"}}
		}},
		{"relative host path", "mounts[0].hostPath", func(s *skiffrt.ContainerSpec) {
			s.Mounts = []skiffrt.Mount{{HostPath: "tmp", ContainerPath: "/data"}}
		}},
		{"unknown capability", "capAdd[0]", func(s *skiffrt.ContainerSpec) { s.CapAdd = []string{"CAP_FLY"} }},
		{"bad user", "user", func(s *skiffrt.ContainerSpec) { s.User = "a:b:c" }},
		{"unknown user", "user", func(s *skiffrt.ContainerSpec) { s.User = "nobody" }},
		{"unknown group", "user", func(s *skiffrt.ContainerSpec) { s.User = "user:wheel" }},
		{"bad env", "env[0]", func(s *skiffrt.ContainerSpec) { s.Env = []string{"NOEQUALS"} }},
		{"bad seccomp", "seccomp", func(s *skiffrt.ContainerSpec) { s.Seccomp = "localhost/x.json" }},
		{"relative working dir", "workingDir", func(s *skiffrt.ContainerSpec) { s.WorkingDir = "tmp" }},
		{"bad id", "id", func(s *skiffrt.ContainerSpec) { s.ID = "../x" }},
		{"missing command", "args[0]", func(s *skiffrt.ContainerSpec) { s.Args = []string{"/no/such/command"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := good()
			tc.change(&spec)
			c, err := r.Create(context.Background(), spec)
			if err == nil {
				c.Stop(context.Background(), 0)
				c.Remove(context.Background())
				t.Fatal("Create accepted it")
			}
			if !errors.Is(err, skiffrt.ErrInvalidSpec) || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q: want ErrInvalidSpec naming %s", err, tc.field)
			}
			if left := leftovers(r, spec.ID); len(left) > 0 && spec.ID != "../x" {
				t.Errorf("left behind: %v", left)
			}
		})
	}
	if ents, _ := os.ReadDir(r.bundles); len(ents) != 0 {
		t.Errorf("bundles left: %v", ents)
	}
}

func TestSecurityDefaults(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	layer := busyboxLayer(t)
	for _, tc := range []struct {
		name string
		spec skiffrt.ContainerSpec
		args []string
		want string
	}{
		// CapEff of the default set: 0xa80425fb.
		{"default caps", skiffrt.ContainerSpec{}, []string{"grep", "CapEff", "/proc/self/status"}, "CapEff:\t00000000a80425fb\n"},
		{"drop all add one", skiffrt.ContainerSpec{CapDrop: []string{"ALL"}, CapAdd: []string{"NET_ADMIN"}}, []string{"grep", "CapEff", "/proc/self/status"}, "CapEff:\t0000000000001000\n"},
		{"seccomp refuses mount", skiffrt.ContainerSpec{CapAdd: []string{"CAP_SYS_ADMIN"}}, []string{"sh", "-c", "mount -t tmpfs none /tmp 2>&1; echo $?"}, "mount: permission denied (are you root?)\n1\n"},
		{"unconfined may mount", skiffrt.ContainerSpec{CapAdd: []string{"CAP_SYS_ADMIN"}, Seccomp: skiffrt.SeccompUnconfined}, []string{"sh", "-c", "mount -t tmpfs none /tmp && echo mounted"}, "mounted\n"},
		{"readonly rootfs", skiffrt.ContainerSpec{ReadOnlyRootfs: true}, []string{"sh", "-c", "touch /x 2>&1 | grep -o 'Read-only'"}, "Read-only\n"},
		{"masked timer_list", skiffrt.ContainerSpec{}, []string{"sh", "-c", "wc -c < /proc/timer_list"}, "0\n"},
		{"oom_score_adj clamped", skiffrt.ContainerSpec{OOMScoreAdj: -1000}, []string{"cat", "/proc/self/oom_score_adj"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec
			spec.ID, spec.Layers, spec.Args = newID(t), []string{layer}, tc.args
			var out syncBuffer
			spec.Stdout = &out
			_, st := run(t, r, spec)
			want := tc.want
			if tc.name == "oom_score_adj clamped" {
				want = strconv.Itoa(r.minOOMScore) + "\n"
			}
			if out.String() != want {
				t.Errorf("output %q (status %+v), want %q", out.String(), st, want)
			}
		})
	}
}

func TestCPUBudget(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	_, st := run(t, r, skiffrt.ContainerSpec{ID: newID(t), Layers: []string{busyboxLayer(t)}, CPUBudget: 300 * time.Millisecond,
		Args: []string{"sh", "-c", "while :; do :; done"}})
	if st.ExitCode != skiffrt.ExitCodeStopped || st.Reason != skiffrt.ReasonCPUBudgetExceeded {
		t.Errorf("status = %+v, want 137 CPUBudgetExceeded", st)
	}
}

func TestCloseLeavesContainersRunning(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	layer := busyboxLayer(t)
	ctx := context.Background()
	r1, err := New(Config{Root: root, CgroupParent: testCgroupParent})
	if err != nil {
		t.Fatal(err)
	}
	id := newID(t)
	c1, err := r1.create(ctx, skiffrt.ContainerSpec{ID: id, Layers: []string{layer}, Args: []string{"sleep", "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r1.Create(ctx, skiffrt.ContainerSpec{ID: newID(t), Layers: []string{layer}, Args: []string{"true"}}); !errors.Is(err, skiffrt.ErrClosed) {
		t.Errorf("Create after Close: %v, want ErrClosed", err)
	}
	r2 := newRuntime(t, root)
	c2, err := r2.adopt(ctx, skiffrt.ContainerSpec{ID: id, Layers: []string{layer}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeContainer(t, c2) })
	if st := c2.Status(); st.State != skiffrt.StateRunning {
		t.Fatalf("after Close, adopted: %+v, want running", st)
	}
	if err := c2.Stop(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if st := c2.Status(); st.State != skiffrt.StateExited || st.ExitCode != 137 {
		t.Errorf("stopped: %+v, want exited 137 (this process is its parent)", st)
	}
}
