package oci

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"skiff.dev/skiff/netns/netnstest"
	skiffrt "skiff.dev/skiff/runtime"
)

// attachment is an Attach in progress, with its streams.
type attachment struct {
	typed  *io.PipeWriter // the session's stdin
	out    syncBuffer
	errOut syncBuffer
	result chan error
	cancel func()
}

// attach starts an attach session to c; resize may be nil. Its stdin is
// closed and it is ended when the test ends.
func attach(t *testing.T, c *Container, stdin bool, resize chan skiffrt.TerminalSize) *attachment {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a := &attachment{result: make(chan error, 1), cancel: cancel}
	aio := skiffrt.AttachIO{Stdout: &a.out, Stderr: &a.errOut}
	if resize != nil {
		aio.Resize = resize
	}
	if stdin {
		pr, pw := io.Pipe()
		a.typed, aio.Stdin = pw, pr
		t.Cleanup(func() { pr.Close() })
	}
	go func() { a.result <- c.Attach(ctx, aio) }()
	t.Cleanup(func() {
		cancel()
		if a.typed != nil {
			a.typed.Close()
		}
	})
	return a
}

// type_ writes s to the session's stdin.
func (a *attachment) type_(t *testing.T, s string) {
	t.Helper()
	if _, err := a.typed.Write([]byte(s)); err != nil {
		t.Fatalf("write to the session's stdin: %v", err)
	}
}

// wait returns Attach's result, failing the test if it does not come
// within d.
func (a *attachment) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-a.result:
		return err
	case <-time.After(d):
		t.Fatalf("Attach has not returned within %v; output %q", d, a.out.String())
		return nil
	}
}

func TestAttachStdin(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	var log syncBuffer
	c := create(t, r, skiffrt.ContainerSpec{ID: newID(t), Layers: []string{busyboxLayer(t)}, Args: []string{"sh"}, Stdin: true, Stdout: &log})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}

	a := attach(t, c, true, nil)
	a.type_(t, "echo hi\n")
	netnstest.Eventually(t, 10*time.Second, func() bool { return a.out.String() == "hi\n" }, func() string { return "hi through the attach" })
	netnstest.Eventually(t, 10*time.Second, func() bool { return log.String() == "hi\n" }, func() string { return "hi in the log" })
	a.type_(t, "echo oops >&2\n")
	netnstest.Eventually(t, 10*time.Second, func() bool { return a.errOut.String() == "oops\n" }, func() string { return "stderr through the attach" })
	a.typed.Close() // the session's stdin ends: so does the session, not the container's stdin
	if err := a.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if st := c.Status(); st.State != skiffrt.StateRunning {
		t.Fatalf("after the first session: %+v, want running (stdin stays open without stdin_once)", st)
	}

	// Output while nobody is attached goes to the log only.
	b := attach(t, c, true, nil)
	b.type_(t, "echo again\n")
	netnstest.Eventually(t, 10*time.Second, func() bool { return b.out.String() == "again\n" }, func() string { return "again through the second attach" })
	if got := a.out.String(); got != "hi\n" {
		t.Errorf("the ended session got %q", got)
	}
	// A session without stdin gets the output of the others.
	o := attach(t, c, false, nil)
	netnstest.Eventually(t, 10*time.Second, func() bool {
		b.type_(t, "echo both\n")
		return strings.Contains(o.out.String(), "both\n")
	}, func() string { return "the output-only session subscribed" })
	b.type_(t, "exit 3\n")
	for _, s := range []*attachment{b, o} {
		if err := s.wait(t, 10*time.Second); err != nil {
			t.Errorf("Attach, the container having exited: %v", err)
		}
	}
	waitDone(t, c, 10*time.Second)
	if st := c.Status(); st.ExitCode != 3 {
		t.Errorf("exit: %+v, want 3", st)
	}
	if err := c.Attach(context.Background(), skiffrt.AttachIO{}); !errors.Is(err, skiffrt.ErrState) {
		t.Errorf("Attach to an exited container: %v, want ErrState", err)
	}
}

func TestAttachStdinOnce(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	var log syncBuffer
	c := create(t, r, skiffrt.ContainerSpec{ID: newID(t), Layers: []string{busyboxLayer(t)}, Args: []string{"sh", "-c", "cat; echo stdin closed"}, Stdin: true, StdinOnce: true, Stdout: &log})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A session without stdin does not close it.
	o := attach(t, c, false, nil)
	o.cancel()
	if err := o.wait(t, 10*time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("Attach ended by its context: %v", err)
	}
	a := attach(t, c, true, nil)
	a.type_(t, "hi\n")
	netnstest.Eventually(t, 10*time.Second, func() bool { return a.out.String() == "hi\n" }, func() string { return "hi through the attach" })
	a.typed.Close()
	// The container reads end of file, and the session relays its output
	// until it has exited.
	if err := a.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	waitDone(t, c, 10*time.Second)
	if got := a.out.String(); got != "hi\nstdin closed\n" {
		t.Errorf("attached output %q, want the output up to the exit", got)
	}
	if st := c.Status(); st.ExitCode != 0 {
		t.Errorf("exit: %+v", st)
	}
}

func TestAttachStdinOnceSessionEnds(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	c := create(t, r, skiffrt.ContainerSpec{ID: newID(t), Layers: []string{busyboxLayer(t)}, Args: []string{"sh"}, Stdin: true, StdinOnce: true})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	a := attach(t, c, true, nil)
	a.type_(t, "echo hi\n")
	netnstest.Eventually(t, 10*time.Second, func() bool { return a.out.String() == "hi\n" }, func() string { return "hi through the attach" })
	a.cancel() // the client goes away, its stdin still open
	if err := a.wait(t, 10*time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("Attach: %v, want context.Canceled", err)
	}
	waitDone(t, c, 10*time.Second) // the shell read end of file
}

func TestAttachTTY(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	var log syncBuffer
	c := create(t, r, skiffrt.ContainerSpec{ID: newID(t), Layers: []string{ttyLayer(t)}, Args: []string{"sh"}, Stdin: true, TTY: true, Stdout: &log})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	resize := make(chan skiffrt.TerminalSize, 1)
	resize <- skiffrt.TerminalSize{Width: 120, Height: 40}
	a := attach(t, c, true, resize)
	netnstest.Eventually(t, 10*time.Second, func() bool {
		a.type_(t, "stty size\n")
		return hasLine(a.out.String(), "40 120")
	}, func() string { return "the size 40 120 printed" })
	resize <- skiffrt.TerminalSize{Width: 100, Height: 30}
	netnstest.Eventually(t, 10*time.Second, func() bool {
		a.type_(t, "stty size\n")
		return hasLine(a.out.String(), "30 100")
	}, func() string { return "the new size 30 100 printed" })
	a.type_(t, "tty\n")
	netnstest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(a.out.String(), "/dev/pts/") }, func() string { return "the terminal's name" })
	if !hasLine(log.String(), "30 100") {
		t.Errorf("the log (stdout) lacks the terminal's output: %q", log.String())
	}
	a.cancel()
	if err := a.wait(t, 10*time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("Attach: %v, want context.Canceled", err)
	}
	if st := c.Status(); st.State != skiffrt.StateRunning {
		t.Fatalf("after the session: %+v, want running", st)
	}
	b := attach(t, c, true, nil)
	b.type_(t, "exit 4\n")
	if err := b.wait(t, 10*time.Second); err != nil {
		t.Errorf("Attach: %v", err)
	}
	waitDone(t, c, 10*time.Second)
	if st := c.Status(); st.ExitCode != 4 {
		t.Errorf("exit: %+v, want 4", st)
	}
}

// blockedWriter blocks its first Write until released.
type blockedWriter struct {
	release chan struct{}
	once    sync.Once
}

func (w *blockedWriter) Write(p []byte) (int, error) {
	<-w.release
	return len(p), nil
}

func (w *blockedWriter) unblock() { w.once.Do(func() { close(w.release) }) }

func TestAttachSlowClient(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	var log syncBuffer
	line := strings.Repeat("x", 1000)
	script := "sleep 0.5; i=0; while [ $i -lt 3000 ]; do echo " + line + "; i=$((i+1)); done; echo end"
	c := create(t, r, skiffrt.ContainerSpec{ID: newID(t), Layers: []string{busyboxLayer(t)}, Args: []string{"sh", "-c", script}, Stdout: &log})
	slow := &blockedWriter{release: make(chan struct{})}
	t.Cleanup(slow.unblock)
	result := make(chan error, 1)
	go func() { result <- c.Attach(context.Background(), skiffrt.AttachIO{Stdout: slow}) }()
	netnstest.Eventually(t, 10*time.Second, func() bool {
		c.att.hub.mu.Lock()
		defer c.att.hub.mu.Unlock()
		return len(c.att.hub.subs) == 1
	}, func() string { return "the session subscribed" })
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The log gets all of it although the attached client reads nothing.
	waitDone(t, c, 30*time.Second)
	if got := strings.Count(log.String(), line+"\n"); got != 3000 || !strings.HasSuffix(log.String(), "end\n") {
		t.Fatalf("the log has %d lines of 3000, ends %q", got, log.String()[max(0, len(log.String())-20):])
	}
	slow.unblock()
	select {
	case err := <-result:
		if !errors.Is(err, errAttachCut) {
			t.Errorf("Attach of the slow client: %v, want it cut off", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Attach of the slow client has not returned")
	}
}

func TestAttachAdopted(t *testing.T) {
	needRoot(t)
	root, layer := t.TempDir(), ttyLayer(t)
	r := newRuntime(t, root)
	ctx := context.Background()
	adopt := func(t *testing.T, mode string) *Container {
		t.Helper()
		id := newID(t)
		t.Cleanup(func() { r.removeBundle(ctx, id, cgroup{fs: r.cgroups, path: cgroupsPath(testCgroupParent, id)}) })
		runNode(t, mode, root, layer, id)
		c, err := r.adopt(ctx, skiffrt.ContainerSpec{ID: id, Layers: []string{layer}})
		if err != nil {
			t.Fatalf("Adopt: %v", err)
		}
		t.Cleanup(func() { removeContainer(t, c) })
		return c
	}

	t.Run("stdin", func(t *testing.T) {
		c := adopt(t, "stdin")
		if st := c.Status(); st.State != skiffrt.StateRunning {
			t.Fatalf("adopted: %+v, want running: its stdin outlived the node process", st)
		}
		a := attach(t, c, true, nil)
		a.type_(t, "echo hi\n")
		netnstest.Eventually(t, 10*time.Second, func() bool { return a.out.String() == "hi\n" }, func() string { return "hi through the attach" })
	})
	t.Run("tty", func(t *testing.T) {
		c := adopt(t, "tty")
		if st := c.Status(); st.State != skiffrt.StateRunning {
			t.Fatalf("adopted: %+v, want running (it ignores SIGHUP)", st)
		}
		err := c.Attach(ctx, skiffrt.AttachIO{Stdout: io.Discard})
		if !errors.Is(err, skiffrt.ErrState) || !strings.Contains(err.Error(), "terminal was lost") {
			t.Errorf("Attach: %v, want ErrState: the terminal was lost", err)
		}
	})
}
