package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"skiff.dev/skiff/netns/netnstest"
	skiffrt "skiff.dev/skiff/runtime"
)

// ttyLayer is busyboxLayer with the applets the terminal tests use.
func ttyLayer(t *testing.T) string {
	t.Helper()
	layer := busyboxLayer(t)
	for _, a := range []string{"tty", "stty"} {
		if err := os.Symlink("busybox", filepath.Join(layer, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	return layer
}

// openFDs counts the test process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// consoleLeftovers lists the exec directories and console sockets left in
// the container's bundle and the runtime's root.
func consoleLeftovers(t *testing.T, r *Runtime, c *Container) []string {
	t.Helper()
	var left []string
	for _, pattern := range []string{filepath.Join(c.bundle, "exec-*"), filepath.Join(r.root, "tty-*"), filepath.Join(os.TempDir(), "tty-*", "console.sock")} {
		m, _ := filepath.Glob(pattern)
		left = append(left, m...)
	}
	return left
}

// lines is out's lines, without the terminal's carriage returns.
func lines(out string) []string {
	return strings.Split(strings.ReplaceAll(out, "\r", ""), "\n")
}

func hasLine(out, want string) bool {
	for _, l := range lines(out) {
		if strings.TrimSpace(l) == want {
			return true
		}
	}
	return false
}

func TestExecTTY(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	c := create(t, r, skiffrt.ContainerSpec{ID: newID(t), Layers: []string{ttyLayer(t)}, Args: []string{"sleep", "1000"}})
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	fds, goroutines := openFDs(t), goruntime.NumGoroutine()

	t.Run("tty", func(t *testing.T) {
		var out syncBuffer
		code, err := c.Exec(ctx, skiffrt.Process{Args: []string{"tty"}, TTY: true, Stdout: &out})
		if err != nil || code != 0 {
			t.Fatalf("Exec tty = %d, %v; want 0", code, err)
		}
		if !strings.HasPrefix(strings.TrimSpace(out.String()), "/dev/pts/") {
			t.Errorf("tty printed %q, want a /dev/pts path", out.String())
		}
	})

	t.Run("resize", func(t *testing.T) {
		resize := make(chan skiffrt.TerminalSize, 1)
		resize <- skiffrt.TerminalSize{Width: 120, Height: 40}
		stdin, typed := io.Pipe()
		defer typed.Close()
		var out syncBuffer
		result := make(chan error, 1)
		go func() {
			code, err := c.Exec(ctx, skiffrt.Process{
				Args: []string{"sh", "-c", "stty size; while read line; do stty size; done; exit 3"},
				TTY:  true, Stdin: stdin, Stdout: &out, Resize: resize,
			})
			if err == nil && code != 3 {
				err = fmt.Errorf("exit code %d, want 3", code)
			}
			result <- err
		}()
		netnstest.Eventually(t, 10*time.Second, func() bool { return hasLine(out.String(), "40 120") }, func() string { return "the initial size 40 120 printed" })
		resize <- skiffrt.TerminalSize{Width: 100, Height: 30}
		netnstest.Eventually(t, 10*time.Second, func() bool {
			typed.Write([]byte("\n")) // another stty size
			return hasLine(out.String(), "30 100")
		}, func() string { return "the new size 30 100 printed" })
		typed.Close() // ^D: read fails, the loop ends
		select {
		case err := <-result:
			if err != nil {
				t.Errorf("Exec: %v\noutput: %q", err, out.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Exec has not returned 10s after its stdin closed; output %q", out.String())
		}
	})

	t.Run("typed into sh", func(t *testing.T) {
		var out syncBuffer
		code, err := c.Exec(ctx, skiffrt.Process{Args: []string{"sh"}, TTY: true,
			Stdin: strings.NewReader("echo h''i; exit 7\n"), Stdout: &out})
		if err != nil || code != 7 {
			t.Fatalf("Exec sh = %d, %v; want 7 (output %q)", code, err, out.String())
		}
		if !hasLine(out.String(), "hi") {
			t.Errorf("output %q has no line hi", out.String())
		}
	})

	t.Run("ctx ends it", func(t *testing.T) {
		short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		begin := time.Now()
		if _, err := c.Exec(short, skiffrt.Process{Args: []string{"sleep", "1000"}, TTY: true}); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Exec cut short: %v, want DeadlineExceeded", err)
		}
		if took := time.Since(begin); took > 10*time.Second {
			t.Errorf("Exec cut short took %v", took)
		}
	})

	t.Run("missing command", func(t *testing.T) {
		_, err := c.Exec(ctx, skiffrt.Process{Args: []string{"no-such-command"}, TTY: true})
		if err == nil || !strings.Contains(err.Error(), "no-such-command") {
			t.Errorf("Exec of a missing command: %v, want an error naming it", err)
		}
	})

	if left := consoleLeftovers(t, r, c); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	netnstest.Eventually(t, 10*time.Second, func() bool {
		return openFDs(t) <= fds && goruntime.NumGoroutine() <= goroutines
	}, func() string { return "file descriptors and goroutines back to what they were" })
	if st := c.Status(); st.State != skiffrt.StateRunning {
		t.Errorf("container after the execs: %+v, want running", st)
	}
}

// A container whose bundle path leaves no room for a console socket gets
// one under the runtime's root.
func TestExecTTYLongBundlePath(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	id := newID(t)
	id += strings.Repeat("x", max(0, 100-len(id)))
	c := create(t, r, skiffrt.ContainerSpec{ID: id, Layers: []string{ttyLayer(t)}, Args: []string{"sleep", "1000"}})
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	code, err := c.Exec(ctx, skiffrt.Process{Args: []string{"tty"}, TTY: true, Stdout: &out})
	if err != nil || code != 0 || !strings.HasPrefix(strings.TrimSpace(out.String()), "/dev/pts/") {
		t.Errorf("Exec tty = %d, %v, output %q; want 0 and a /dev/pts path", code, err, out.String())
	}
	if left := consoleLeftovers(t, r, c); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

func TestListenConsole(t *testing.T) {
	short := t.TempDir()
	long := filepath.Join(short, strings.Repeat("d", 100))
	if err := os.MkdirAll(long, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		dir       string
		fallbacks []string
		wantIn    string // the socket's directory's parent, or the directory
		wantErr   string
	}{
		{"short enough", short, []string{long}, short, ""},
		{"too long: the first fallback that fits", long, []string{long, short}, short, ""},
		{"nothing fits", long, []string{long}, "", "longer than the 107 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := listenConsole(tc.dir, tc.fallbacks...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("listenConsole = %v, want an error saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := filepath.Dir(s.path); got != tc.wantIn && filepath.Dir(got) != tc.wantIn {
				t.Errorf("socket at %s, want it in %s", s.path, tc.wantIn)
			}
			if _, err := os.Stat(s.path); err != nil {
				t.Errorf("socket: %v", err)
			}
			s.close()
			if _, err := os.Stat(s.path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket after close: %v, want it gone", err)
			}
			if s.dir != "" {
				if _, err := os.Stat(s.dir); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("socket's directory after close: %v, want it gone", err)
				}
			}
		})
	}
}
