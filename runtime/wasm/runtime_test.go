package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	skiffrt "skiff.dev/skiff/runtime"
	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

var (
	// guestPath is the Go test program (testdata/guest) built for wasip1.
	guestPath string
	// serverPath is testdata/server, an HTTP server on pre-opened sockets.
	serverPath string
	// cacheDir is the compilation cache every test runtime shares, so the
	// guest (2.6 MB, seconds to compile under -race) is compiled once.
	cacheDir string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wasm-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	guestPath = filepath.Join(dir, "guest.wasm")
	cacheDir = filepath.Join(dir, "cache")
	serverPath = filepath.Join(dir, "server.wasm")
	for _, b := range []struct{ src, out string }{{"testdata/guest", guestPath}, {"testdata/server", serverPath}} {
		if err := wasmtest.BuildGo(b.src, b.out); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func newRuntime(t *testing.T, cfg Config) *Runtime {
	t.Helper()
	if cfg.CacheDir == "" {
		cfg.CacheDir = cacheDir
	}
	r, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return r
}

func writeModule(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "m.wasm")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// syncBuffer is a bytes.Buffer safe to read while the guest writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func waitDone(t *testing.T, c *Container) Status {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("container did not exit; status %+v", c.Status())
	}
	return c.Status()
}

func TestExitSemantics(t *testing.T) {
	r := newRuntime(t, Config{})
	tests := []struct {
		name    string
		module  []byte
		code    int32
		reason  string
		message string
		stdout  string
		stderr  string
	}{
		{name: "return from _start", module: wasmtest.Build(wasmtest.Write(1, "hello\n")), code: 0, reason: "Completed", stdout: "hello\n"},
		{name: "proc_exit 0", module: wasmtest.Build(wasmtest.Write(2, "bye\n"), wasmtest.Exit(0), wasmtest.Write(1, "not reached")), code: 0, reason: "Completed", stderr: "bye\n"},
		{name: "proc_exit 3", module: wasmtest.Build(wasmtest.Exit(3)), code: 3, reason: "Error"},
		{name: "trap", module: wasmtest.Build(wasmtest.Write(1, "before\n"), wasmtest.Trap()), code: 134, reason: "Error", message: "wasm error: unreachable", stdout: "before\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr syncBuffer
			c, err := r.Create(context.Background(), ContainerSpec{ID: tt.name, ImagePath: writeModule(t, tt.module), Args: []string{"m"}, Stdout: &stdout, Stderr: &stderr})
			if err != nil {
				t.Fatal(err)
			}
			if st := c.Status(); st.State != StateCreated {
				t.Fatalf("state after Create = %v", st.State)
			}
			if err := c.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			st := waitDone(t, c)
			if st.State != StateExited || st.ExitCode != tt.code || st.Reason != tt.reason || st.Message != tt.message {
				t.Errorf("status = %+v; want exit %d reason %q message %q", st, tt.code, tt.reason, tt.message)
			}
			if st.StartedAt.IsZero() || st.FinishedAt.Before(st.StartedAt) {
				t.Errorf("timestamps = %v .. %v", st.StartedAt, st.FinishedAt)
			}
			if stdout.String() != tt.stdout || stderr.String() != tt.stderr {
				t.Errorf("stdout %q stderr %q; want %q %q", stdout.String(), stderr.String(), tt.stdout, tt.stderr)
			}
		})
	}
}

func TestStop(t *testing.T) {
	r := newRuntime(t, Config{})
	tests := []struct {
		name   string
		module []byte
	}{
		{name: "spinning", module: wasmtest.Build(wasmtest.Spin())},
		{name: "sleeping", module: wasmtest.Build(wasmtest.Sleep(time.Hour))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := r.Create(context.Background(), ContainerSpec{ID: tt.name, ImagePath: writeModule(t, tt.module), Args: []string{"m"}})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			if st := c.Status(); st.State != StateRunning {
				t.Fatalf("state after Start = %v", st.State)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := c.Stop(ctx, 0); err != nil {
				t.Fatal(err)
			}
			st := c.Status()
			if st.State != StateExited || st.ExitCode != 137 || st.Reason != "Error" || st.Message != "stopped" {
				t.Errorf("status after Stop = %+v", st)
			}
			if err := c.Stop(ctx, 0); err != nil {
				t.Errorf("second Stop = %v, want nil (idempotent)", err)
			}
			if err := c.Start(ctx); !errors.Is(err, ErrState) {
				t.Errorf("Start after Stop = %v, want ErrState", err)
			}
		})
	}
}

func TestStopBeforeStart(t *testing.T) {
	r := newRuntime(t, Config{})
	c, err := r.Create(context.Background(), ContainerSpec{ID: "c", ImagePath: writeModule(t, wasmtest.Build()), Args: []string{"m"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	if st := c.Status(); st.State != StateExited || st.ExitCode != 137 {
		t.Errorf("status = %+v", st)
	}
	if err := c.Start(context.Background()); !errors.Is(err, ErrState) {
		t.Errorf("Start after Stop = %v, want ErrState", err)
	}
}

func TestStartTwice(t *testing.T) {
	r := newRuntime(t, Config{})
	c, err := r.Create(context.Background(), ContainerSpec{ID: "c", ImagePath: writeModule(t, wasmtest.Build(wasmtest.Spin())), Args: []string{"m"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Stop(context.Background(), 0)
	if err := c.Start(context.Background()); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "running") {
		t.Errorf("second Start = %v, want ErrState naming the state", err)
	}
}

func TestCreateRejects(t *testing.T) {
	r := newRuntime(t, Config{})
	tests := []struct {
		name   string
		module []byte
		spec   ContainerSpec
		is     error
		reason string
	}{
		{name: "garbage body", module: []byte("\x00asm\x01\x00\x00\x00garbage!"), is: ErrInvalidModule, reason: "section"},
		{name: "no _start", module: wasmtest.Reactor(), is: ErrInvalidModule, reason: "exports no _start function"},
		{name: "unknown import", module: wasmtest.Importing("env", "launch_missiles"), is: ErrInvalidModule, reason: "imports function env.launch_missiles"},
		{name: "unknown wasi import", module: wasmtest.Importing("wasi_snapshot_preview1", "nope"), is: ErrInvalidModule, reason: "wasi_snapshot_preview1.nope"},
		{name: "no argv", module: wasmtest.Build(), spec: ContainerSpec{Args: []string{}}, is: ErrInvalidSpec, reason: "argv is empty"},
		{name: "empty arg", module: wasmtest.Build(), spec: ContainerSpec{Args: []string{"m", ""}}, is: ErrInvalidSpec, reason: "argument 1 is empty"},
		{name: "bad env", module: wasmtest.Build(), spec: ContainerSpec{Args: []string{"m"}, Env: []string{"NOEQUALS"}}, is: ErrInvalidSpec, reason: `"NOEQUALS" is not KEY=VALUE`},
		// What only an OCI container has is refused, never ignored.
		{name: "privileged", module: wasmtest.Build(), spec: ContainerSpec{Privileged: true}, is: ErrInvalidSpec, reason: "privileged"},
		{name: "host pid", module: wasmtest.Build(), spec: ContainerSpec{HostPID: true}, is: ErrInvalidSpec, reason: "hostPID"},
		{name: "sysctls", module: wasmtest.Build(), spec: ContainerSpec{Sysctls: map[string]string{"kernel.msgmax": "1"}}, is: ErrInvalidSpec, reason: "sysctls"},
		{name: "masked paths", module: wasmtest.Build(), spec: ContainerSpec{MaskedPaths: []string{}}, is: ErrInvalidSpec, reason: "maskedPaths"},
		{name: "localhost seccomp", module: wasmtest.Build(), spec: ContainerSpec{Seccomp: skiffrt.SeccompLocalhost}, is: ErrInvalidSpec, reason: "seccomp"},
		{name: "propagation", module: wasmtest.Build(), spec: ContainerSpec{Mounts: []Mount{{HostPath: "/tmp", ContainerPath: "/d", Propagation: skiffrt.PropagationHostToContainer}}},
			is: ErrInvalidSpec, reason: "propagation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := tt.spec
			if spec.Args == nil {
				spec.Args = []string{"m"}
			}
			spec.ID = "c1"
			spec.ImageID = tt.name
			spec.ImagePath = writeModule(t, tt.module)
			_, err := r.Create(context.Background(), spec)
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.reason) || !strings.Contains(err.Error(), "create container c1") {
				t.Fatalf("Create = %v; want %v with %q", err, tt.is, tt.reason)
			}
		})
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.modules.entries) != 0 {
		t.Errorf("failed compilations were cached: %d entries", len(r.modules.entries))
	}
}

func TestGoGuest(t *testing.T) {
	r := newRuntime(t, Config{})
	var stdout, stderr syncBuffer
	c, err := r.Create(context.Background(), ContainerSpec{
		ID: "go", ImageID: "guest", ImagePath: guestPath,
		Args:   []string{"prog", "argv0", "env", "GREETING", "echo", "hi there", "stderr", "oops", "exit", "7"},
		Env:    []string{"GREETING=hello=world", "OTHER=x"},
		Stdout: &stdout, Stderr: &stderr,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := waitDone(t, c)
	if st.ExitCode != 7 || st.Reason != "Error" {
		t.Errorf("status = %+v", st)
	}
	if want := "prog\nGREETING=hello=world\nhi there\n"; stdout.String() != want {
		t.Errorf("stdout = %q, want %q", stdout.String(), want)
	}
	if stderr.String() != "oops\n" {
		t.Errorf("stderr = %q", stderr.String())
	}
}

// TestInstancesAreIsolated runs several instances of one compiled module at
// once, each with its own args and stdout, stops a sleeping one and checks
// the others are untouched.
func TestInstancesAreIsolated(t *testing.T) {
	r := newRuntime(t, Config{})
	sleeper, err := r.Create(context.Background(), ContainerSpec{ID: "sleeper", ImageID: "guest", ImagePath: guestPath, Args: []string{"g", "echo", "zzz", "sleep", "1h"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := sleeper.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	outs := make([]syncBuffer, n)
	for i := range n {
		wg.Go(func() {
			c, err := r.Create(context.Background(), ContainerSpec{ID: fmt.Sprint(i), ImageID: "guest", ImagePath: guestPath, Args: []string{"g", "echo", fmt.Sprint("n", i)}, Stdout: &outs[i]})
			if err != nil {
				t.Error(err)
				return
			}
			if err := c.Start(context.Background()); err != nil {
				t.Error(err)
				return
			}
			<-c.Done()
			if st := c.Status(); st.ExitCode != 0 {
				t.Errorf("container %d: %+v", i, st)
			}
		})
	}
	wg.Wait()
	for i := range n {
		if got := outs[i].String(); got != fmt.Sprintf("n%d\n", i) {
			t.Errorf("container %d stdout = %q", i, got)
		}
	}
	if st := sleeper.Status(); st.State != StateRunning {
		t.Fatalf("sleeper = %+v", st)
	}
	start := time.Now()
	if err := sleeper.Stop(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if st := sleeper.Status(); st.ExitCode != 137 || time.Since(start) > 5*time.Second {
		t.Errorf("sleeper after Stop = %+v after %v", st, time.Since(start))
	}
	r.mu.Lock()
	entries := len(r.modules.entries)
	r.mu.Unlock()
	if entries != 1 {
		t.Errorf("compiled-module cache has %d entries, want 1", entries)
	}
}

func TestCloseStopsRunning(t *testing.T) {
	r, err := New(context.Background(), Config{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := r.Create(context.Background(), ContainerSpec{ID: "c", ImagePath: writeModule(t, wasmtest.Build(wasmtest.Spin())), Args: []string{"m"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := c.Status(); st.State != StateExited || st.ExitCode != 137 || st.Message != "runtime closed" {
		t.Errorf("status after Close = %+v", st)
	}
	if _, err := r.Create(context.Background(), ContainerSpec{ID: "d", ImagePath: guestPath, Args: []string{"m"}}); !errors.Is(err, ErrClosed) {
		t.Errorf("Create after Close = %v", err)
	}
}

// TestCompilationCacheDir checks that compiled code lands in CacheDir and is
// found there by a second runtime.
func TestCompilationCacheDir(t *testing.T) {
	dir := t.TempDir()
	module := writeModule(t, wasmtest.Build(wasmtest.Write(1, "cached")))
	compile := func() time.Duration {
		r := newRuntime(t, Config{CacheDir: dir})
		start := time.Now()
		if _, err := r.Create(context.Background(), ContainerSpec{ID: "c", ImageID: "k", ImagePath: module, Args: []string{"m"}}); err != nil {
			t.Fatal(err)
		}
		d := time.Since(start)
		if err := r.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		return d
	}
	cold := compile()
	var files int
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, _ error) error {
		if d != nil && !d.IsDir() {
			files++
		}
		return nil
	})
	if files == 0 {
		t.Fatal("compilation cache directory is empty")
	}
	warm := compile()
	t.Logf("compile: cold %v, from disk cache %v", cold, warm)
}

// TestStartStopRace races Start, Stop and Status on fresh containers: every
// container must end Exited with Done closed, stopped (137) whichever won.
func TestStartStopRace(t *testing.T) {
	r := newRuntime(t, Config{})
	path := writeModule(t, wasmtest.Build(wasmtest.Spin()))
	for i := range 30 {
		c, err := r.Create(context.Background(), ContainerSpec{ID: fmt.Sprint(i), ImageID: "spin", ImagePath: path, Args: []string{"m"}})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := c.Start(context.Background()); err != nil && !errors.Is(err, ErrState) {
				t.Errorf("Start = %v", err)
			}
		})
		wg.Go(func() { c.Status() })
		wg.Go(func() {
			if err := c.Stop(context.Background(), 0); err != nil {
				t.Errorf("Stop = %v", err)
			}
		})
		wg.Wait()
		c.Stop(context.Background(), 0) // if Start won after Stop's no-op
		st := waitDone(t, c)
		if st.State != StateExited || st.ExitCode != ExitCodeStopped {
			t.Fatalf("container %d: %+v", i, st)
		}
	}
}

// waitOutput waits until the guest's stdout holds want.
func waitOutput(t *testing.T, out *syncBuffer, want string) {
	t.Helper()
	wasmtest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(out.String(), want) },
		func() string { return fmt.Sprintf("stdout %q never held %q", out.String(), want) })
}

// TestGracefulStop stops running guests with a grace period: the guest's
// stdin reaches end of file; a guest that then returns keeps its own exit,
// and Stop returns as soon as it has; one that does not is killed when the
// grace period ends.
func TestGracefulStop(t *testing.T) {
	r := newRuntime(t, Config{})
	tests := []struct {
		name    string
		module  []byte   // nil: the Go guest
		args    []string // the Go guest's script; it prints "ready" first
		grace   time.Duration
		code    int32
		reason  string
		message string
		last    string // the last line of stdout
		killed  bool   // killed when grace ends, not before
	}{
		// The guest ticks on its main goroutine while another reads
		// stdin: "tick" twice before the stop shows that a goroutine
		// waiting for stdin does not freeze the guest.
		{name: "returns at end of stdin", args: []string{"graceful", "1ms"}, grace: time.Minute,
			code: 0, reason: "Completed", last: "terminating"},
		{name: "exits with its own code", args: []string{"wait-stdin", "exit", "3"}, grace: time.Minute,
			code: 3, reason: "Error", last: "terminating"},
		{name: "ignores stdin", args: []string{"sleep", "1h"}, grace: 200 * time.Millisecond,
			code: 137, reason: "Error", message: "stopped: did not exit within the 200ms grace period", last: "ready", killed: true},
		{name: "sees the end of stdin and sleeps on", args: []string{"wait-stdin", "sleep", "1h"}, grace: 200 * time.Millisecond,
			code: 137, reason: "Error", message: "stopped: did not exit within the 200ms grace period", last: "terminating", killed: true},
		{name: "spins", module: wasmtest.Build(wasmtest.Write(1, "ready\n"), wasmtest.Spin()), grace: 200 * time.Millisecond,
			code: 137, reason: "Error", message: "stopped: did not exit within the 200ms grace period", last: "ready", killed: true},
		// No grace: killed at once, so the guest, woken by the end of
		// stdin, does not get as far as printing "terminating".
		{name: "no grace period", args: []string{"graceful", "1ms"}, grace: 0,
			code: 137, reason: "Error", message: "stopped", last: "tick"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := ContainerSpec{ID: tt.name, ImageID: "guest", ImagePath: guestPath, Args: append([]string{"g", "echo", "ready"}, tt.args...)}
			if tt.module != nil {
				spec = ContainerSpec{ID: tt.name, ImagePath: writeModule(t, tt.module), Args: []string{"m"}}
				tt.args = []string{"-"}
			}
			var stdout syncBuffer
			spec.Stdout = &stdout
			c, err := r.Create(context.Background(), spec)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer c.Stop(context.Background(), 0)
			waitOutput(t, &stdout, "ready\n")
			if tt.args[0] == "graceful" {
				waitOutput(t, &stdout, "tick\ntick\n")
			}
			start := time.Now()
			if err := c.Stop(context.Background(), tt.grace); err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			t.Logf("Stop(grace %v) returned after %v", tt.grace, took)
			st := c.Status()
			if st.State != StateExited || st.ExitCode != tt.code || st.Reason != tt.reason || st.Message != tt.message {
				t.Errorf("status = %+v; want exit %d reason %q message %q", st, tt.code, tt.reason, tt.message)
			}
			lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
			if !tt.killed && tt.last == "tick" {
				// Ticks may be cut anywhere: only "terminating" must be absent.
				if strings.Contains(stdout.String(), "terminating") {
					t.Errorf("stdout %q: the killed guest ran on", stdout.String())
				}
			} else if last := lines[len(lines)-1]; last != tt.last {
				t.Errorf("last line of stdout = %q, want %q", last, tt.last)
			}
			switch {
			case tt.killed && took < tt.grace:
				t.Errorf("killed after %v, before the %v grace period ended", took, tt.grace)
			case !tt.killed && tt.grace > 0 && took > tt.grace/2:
				t.Errorf("Stop returned after %v; the guest stopped when asked, well within %v", took, tt.grace)
			}
			if err := c.Stop(context.Background(), tt.grace); err != nil {
				t.Errorf("second Stop = %v, want nil (idempotent)", err)
			}
		})
	}
}

// TestGracefulStopDeadline checks that the kill at the end of the grace
// period belongs to the container: it happens although the caller gave up,
// a later Stop with less grace brings it forward, and one with more grace
// does not postpone it.
func TestGracefulStopDeadline(t *testing.T) {
	r := newRuntime(t, Config{})
	tests := []struct {
		name    string
		graces  []time.Duration // successive Stops, each given up after 1ms but the last
		message string
	}{
		{name: "caller gives up", graces: []time.Duration{200 * time.Millisecond}, message: "stopped: did not exit within the 200ms grace period"},
		{name: "shorter grace", graces: []time.Duration{time.Hour, 200 * time.Millisecond}, message: "stopped: did not exit within the 200ms grace period"},
		{name: "longer grace", graces: []time.Duration{200 * time.Millisecond, time.Hour}, message: "stopped: did not exit within the 200ms grace period"},
		{name: "then no grace", graces: []time.Duration{time.Hour, 0}, message: "stopped"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := r.Create(context.Background(), ContainerSpec{ID: tt.name, ImageID: "guest", ImagePath: guestPath, Args: []string{"g", "wait-stdin", "sleep", "1h"}})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer c.Stop(context.Background(), 0)
			for _, grace := range tt.graces {
				ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
				err := c.Stop(ctx, grace)
				cancel()
				if err != nil && !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Stop(%v) = %v", grace, err)
				}
			}
			st := waitDone(t, c)
			if st.ExitCode != 137 || st.Reason != "Error" || st.Message != tt.message {
				t.Errorf("status = %+v; want 137 %q", st, tt.message)
			}
		})
	}
}

// TestStdinPipesClosed checks that containers give back the descriptors of
// their stdin pipe however they end.
func TestStdinPipesClosed(t *testing.T) {
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skipf("cannot count open descriptors: %v", err)
		}
		return len(ents)
	}
	r := newRuntime(t, Config{})
	ends := []struct {
		name string
		args []string
		stop time.Duration // -1: not stopped
	}{
		{name: "returns", args: []string{"echo", "hi"}, stop: -1},
		{name: "exits", args: []string{"exit", "3"}, stop: -1},
		{name: "killed", args: []string{"sleep", "1h"}, stop: 0},
		{name: "stops when asked", args: []string{"wait-stdin"}, stop: time.Minute},
		{name: "killed after grace", args: []string{"sleep", "1h"}, stop: time.Millisecond},
	}
	var cs []*Container
	for _, e := range ends {
		c, err := r.Create(context.Background(), ContainerSpec{ID: e.name, ImageID: "guest", ImagePath: guestPath, Args: append([]string{"g"}, e.args...)})
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	never, err := r.Create(context.Background(), ContainerSpec{ID: "never started", ImageID: "guest", ImagePath: guestPath, Args: []string{"g"}})
	if err != nil {
		t.Fatal(err)
	}
	before := fds()
	for i, c := range cs {
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if ends[i].stop >= 0 {
			if err := c.Stop(context.Background(), ends[i].stop); err != nil {
				t.Fatal(err)
			}
		}
		waitDone(t, c)
	}
	if err := never.Stop(context.Background(), time.Minute); err != nil {
		t.Fatal(err)
	}
	if after := fds(); after != before {
		t.Errorf("%d descriptors open after the containers ended, %d before", after, before)
	}
}
