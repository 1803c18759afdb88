package oci

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"skiff.dev/skiff/netns/netnstest"
	skiffrt "skiff.dev/skiff/runtime"
)

func TestRunOutputAndExitCode(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	layer := busyboxLayer(t)
	for _, tc := range []struct {
		name           string
		args           []string
		stdout, stderr string
		code           int32
		reason         string
	}{
		{"echo", []string{"echo", "hello"}, "hello\n", "", 0, skiffrt.ReasonCompleted},
		{"exit 3", []string{"sh", "-c", "echo out; echo err >&2; exit 3"}, "out\n", "err\n", 3, skiffrt.ReasonError},
		{"false", []string{"false"}, "", "", 1, skiffrt.ReasonError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr syncBuffer
			c, st := run(t, r, skiffrt.ContainerSpec{ID: newID(t), Layers: []string{layer}, Args: tc.args, Stdout: &stdout, Stderr: &stderr})
			if st.State != skiffrt.StateExited || st.ExitCode != tc.code || st.Reason != tc.reason {
				t.Errorf("status = %+v, want exited with %d, %s", st, tc.code, tc.reason)
			}
			if st.StartedAt.IsZero() || st.FinishedAt.Before(st.StartedAt) {
				t.Errorf("times: started %v, finished %v", st.StartedAt, st.FinishedAt)
			}
			if stdout.String() != tc.stdout || stderr.String() != tc.stderr {
				t.Errorf("stdout %q, stderr %q; want %q, %q", stdout.String(), stderr.String(), tc.stdout, tc.stderr)
			}
			if c.Stats().CPUTime <= 0 {
				t.Errorf("Stats().CPUTime = %v after the run, want > 0", c.Stats().CPUTime)
			}
		})
	}
}

func TestEnvCwdUser(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	layer := busyboxLayer(t)
	for _, tc := range []struct {
		name, user string
		extra      []uint32
		want       string
	}{
		{"root", "", nil, "0 0 0"},
		{"name", "user", nil, "1000 1000 1000 50"},
		{"uid", "1000", nil, "1000 1000 1000 50"},
		{"uid:gid", "1234:5678", []uint32{42}, "1234 5678 5678 42"},
		{"name:group", "user:staff", nil, "1000 50 50"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout syncBuffer
			_, st := run(t, r, skiffrt.ContainerSpec{
				ID: newID(t), Layers: []string{layer}, User: tc.user, AdditionalGIDs: tc.extra,
				Env: []string{"FOO=bar baz"}, WorkingDir: "/tmp", Hostname: "box",
				Args:   []string{"sh", "-c", `echo "$FOO|$(pwd)|$PATH|$(hostname)|$(id -u) $(id -g) $(id -G)"`},
				Stdout: &stdout,
			})
			want := "bar baz|/tmp|" + defaultPath[len("PATH="):] + "|box|" + tc.want + "\n"
			if st.ExitCode != 0 || stdout.String() != want {
				t.Errorf("exit %d (%s), output %q; want %q", st.ExitCode, st.Message, stdout.String(), want)
			}
		})
	}
}

func TestOOMKilled(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	_, st := run(t, r, skiffrt.ContainerSpec{
		ID: newID(t), Layers: []string{busyboxLayer(t)}, MemoryLimit: 32 << 20,
		Args: []string{"sh", "-c", "x=aaaaaaaa; while :; do x=$x$x; done"},
	})
	if st.ExitCode != skiffrt.ExitCodeStopped || st.Reason != skiffrt.ReasonOOMKilled {
		t.Errorf("status = %+v, want 137 OOMKilled", st)
	}
}

func TestStop(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	layer := busyboxLayer(t)
	ctx := context.Background()

	t.Run("TERM ignored, killed after grace", func(t *testing.T) {
		c := create(t, r, skiffrt.ContainerSpec{ID: newID(t), Layers: []string{layer}, Args: []string{"sh", "-c", "trap '' TERM; sleep 1000"}})
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		begin := time.Now()
		// A first Stop with a long grace that gives up early; a second
		// with a shorter grace brings the kill forward.
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		if err := c.Stop(short, time.Hour); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Stop with an hour's grace, cut short: %v", err)
		}
		if err := c.Stop(ctx, time.Second); err != nil {
			t.Fatal(err)
		}
		took := time.Since(begin)
		st := c.Status()
		if st.ExitCode != 137 || st.Reason != skiffrt.ReasonError || !strings.Contains(st.Message, "grace period") {
			t.Errorf("status = %+v, want 137 Error after the grace period", st)
		}
		if took < time.Second || took > 10*time.Second {
			t.Errorf("Stop took %v, want about the grace (1s)", took)
		}
		if err := c.Stop(ctx, 0); err != nil { // idempotent
			t.Errorf("second Stop: %v", err)
		}
	})
	t.Run("TERM handled", func(t *testing.T) {
		var out syncBuffer
		c := create(t, r, skiffrt.ContainerSpec{ID: newID(t), Layers: []string{layer}, Stdout: &out,
			Args: []string{"sh", "-c", "trap 'exit 0' TERM; echo trapped; sleep 1000 & wait"}})
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		netnstest.Eventually(t, 10*time.Second, func() bool { return out.String() == "trapped\n" }, func() string { return "the TERM trap set" })
		begin := time.Now()
		if err := c.Stop(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(begin); took > 20*time.Second {
			t.Errorf("Stop took %v: TERM did not end it", took)
		}
		if st := c.Status(); st.ExitCode != 0 || st.Reason != skiffrt.ReasonCompleted {
			t.Errorf("status = %+v, want 0 Completed", st)
		}
	})
	t.Run("TERM handled from just after the stop", func(t *testing.T) {
		// The init installs its handler only after Stop sent SIGTERM
		// (a shell about to exec a program that handles it): the signal
		// comes again once it is handled, not a grace period later.
		c := create(t, r, skiffrt.ContainerSpec{ID: newID(t), Layers: []string{layer},
			Args: []string{"sh", "-c", "sleep 0.3; trap 'exit 0' TERM; sleep 1000 & wait"}})
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		begin := time.Now()
		if err := c.Stop(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(begin); took > 20*time.Second {
			t.Errorf("Stop took %v: the late handler never got SIGTERM", took)
		}
		if st := c.Status(); st.ExitCode != 0 || st.Reason != skiffrt.ReasonCompleted {
			t.Errorf("status = %+v, want 0 Completed", st)
		}
	})
	t.Run("created, never started", func(t *testing.T) {
		c := create(t, r, skiffrt.ContainerSpec{ID: newID(t), Layers: []string{layer}, Args: []string{"sleep", "1000"}})
		if err := c.Stop(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
		if st := c.Status(); st.State != skiffrt.StateExited || st.ExitCode != 137 {
			t.Errorf("status = %+v, want exited 137", st)
		}
		if err := c.Start(ctx); !errors.Is(err, skiffrt.ErrState) {
			t.Errorf("Start after Stop: %v, want ErrState", err)
		}
	})
}
