package cri

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffrt "skiff.dev/skiff/runtime"
	"skiff.dev/skiff/runtime/oci"
	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

// fakeAttachTask is a running container whose Attach runs attach.
type fakeAttachTask struct {
	fakeExecTask
	attach func(ctx context.Context, a skiffrt.AttachIO) error
}

func (f *fakeAttachTask) Attach(ctx context.Context, a skiffrt.AttachIO) error {
	return f.attach(ctx, a)
}

func newFakeAttachTask(attach func(ctx context.Context, a skiffrt.AttachIO) error) *fakeAttachTask {
	return &fakeAttachTask{fakeExecTask: fakeExecTask{done: make(chan struct{})}, attach: attach}
}

// greet writes "hello" and "err", then copies stdin to stdout until it
// ends, as an attach to a shell echoing its input would.
func greet(ctx context.Context, a skiffrt.AttachIO) error {
	io.WriteString(a.Stdout, "hello\n")
	if a.Stderr != nil {
		io.WriteString(a.Stderr, "err")
	}
	if a.Stdin != nil {
		io.Copy(a.Stdout, a.Stdin)
	}
	return nil
}

func TestAttachRefusals(t *testing.T) {
	e := newStreamEnv(t)
	ctx := context.Background()
	id := e.add("runc", newFakeAttachTask(greet))
	for _, tc := range []struct {
		name string
		req  *runtime.AttachRequest
		code codes.Code
		msg  string
	}{
		{"tty and stderr", &runtime.AttachRequest{ContainerId: id, Tty: true, Stdout: true, Stderr: true}, codes.InvalidArgument, "tty and stderr"},
		{"no stream", &runtime.AttachRequest{ContainerId: id}, codes.InvalidArgument, "one of stdin, stdout and stderr"},
		{"unknown", &runtime.AttachRequest{ContainerId: "f00d", Stdout: true}, codes.NotFound, "f00d"},
		{"wasm", &runtime.AttachRequest{ContainerId: e.add("wasm", newFakeTask(echo)), Stdout: true}, codes.Unimplemented, "not supported by the Wasm runtime"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.svc.Attach(ctx, tc.req)
			wantCode(t, toStatus(err), tc.code, tc.msg)
		})
	}
	t.Run("not running", func(t *testing.T) {
		tk := newFakeAttachTask(greet)
		id := e.add("runc", tk)
		e.svc.mu.Lock()
		e.svc.containers[id].task = nil
		e.svc.containers[id].rec.State = containerExited
		e.svc.mu.Unlock()
		_, err := e.svc.Attach(ctx, &runtime.AttachRequest{ContainerId: id, Stdout: true})
		wantCode(t, toStatus(err), codes.FailedPrecondition, "not running")
	})
}

// TestAttachWebSocket: an attach session over WebSocket relays the
// container's output and the client's stdin, and ends with Success; an
// attach that fails says why; a terminal's sizes reach the runtime.
func TestAttachWebSocket(t *testing.T) {
	e := newStreamEnv(t)
	ctx := context.Background()
	id := e.add("runc", newFakeAttachTask(greet))
	res, err := e.svc.Attach(ctx, &runtime.AttachRequest{ContainerId: id, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Url, "/attach/") {
		t.Errorf("URL %q, want an /attach/ path", res.Url)
	}
	c := dialExec(t, res.Url, protocolV5)
	for _, m := range [][]byte{append([]byte{chanStdin}, "typed\n"...), {chanClose, chanStdin}} {
		if err := c.Write(ctx, websocket.MessageBinary, m); err != nil {
			t.Fatal(err)
		}
	}
	got := transcript(t, c)
	if got[chanStdout] != "hello\ntyped\n" || got[chanStderr] != "err" || got[chanError] != `{"status":"Success"}` {
		t.Errorf("transcript %q", got)
	}

	t.Run("failure", func(t *testing.T) {
		id := e.add("runc", newFakeAttachTask(func(ctx context.Context, a skiffrt.AttachIO) error {
			return errors.New("the client fell behind")
		}))
		res, err := e.svc.Attach(ctx, &runtime.AttachRequest{ContainerId: id, Stdout: true})
		if err != nil {
			t.Fatal(err)
		}
		got := transcript(t, dialExec(t, res.Url, protocolV4))
		var st execStatus
		if err := json.Unmarshal([]byte(got[chanError]), &st); err != nil || st.Status != "Failure" || !strings.Contains(st.Message, "fell behind") {
			t.Errorf("status %q, want Failure saying why", got[chanError])
		}
	})
	t.Run("resize", func(t *testing.T) {
		sizes := make(chan skiffrt.TerminalSize, 1)
		id := e.add("runc", newFakeAttachTask(func(ctx context.Context, a skiffrt.AttachIO) error {
			select {
			case s := <-a.Resize:
				sizes <- s
			case <-ctx.Done():
			}
			return nil
		}))
		res, err := e.svc.Attach(ctx, &runtime.AttachRequest{ContainerId: id, Stdout: true, Tty: true})
		if err != nil {
			t.Fatal(err)
		}
		c := dialExec(t, res.Url, protocolV5)
		if err := c.Write(ctx, websocket.MessageBinary, append([]byte{chanResize}, `{"Width":100,"Height":30}`...)); err != nil {
			t.Fatal(err)
		}
		if got := transcript(t, c); got[chanError] != `{"status":"Success"}` {
			t.Errorf("transcript %q", got)
		}
		if s := <-sizes; s != (skiffrt.TerminalSize{Width: 100, Height: 30}) {
			t.Errorf("size %+v", s)
		}
	})
	waitSessions(t, e.ss)
}

// TestAttachSPDY: an attach session over SPDY, as crictl and critest
// open it.
func TestAttachSPDY(t *testing.T) {
	e := newStreamEnv(t)
	ctx := context.Background()
	id := e.add("runc", newFakeAttachTask(greet))
	res, err := e.svc.Attach(ctx, &runtime.AttachRequest{ContainerId: id, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	c := dialSPDY(t, res.Url, crictlProtocols...)
	errs := c.mustStream(headerStreamType, streamTypeError)
	errs.Close()
	stdin := c.mustStream(headerStreamType, streamTypeStdin)
	stdout := c.mustStream(headerStreamType, streamTypeStdout)
	stderr := c.mustStream(headerStreamType, streamTypeStderr)
	stdin.Write([]byte("typed\n"))
	stdin.Close()
	got := readAll(t, stdout, stderr, errs)
	if got[0] != "hello\ntyped\n" || got[1] != "err" || got[2] != `{"status":"Success"}` {
		t.Errorf("stdout %q, stderr %q, status %q", got[0], got[1], got[2])
	}
	waitSessions(t, e.ss)
}

// runcShell creates and starts a real runc container running sh with
// stdin (and stdin_once if once), removed when the test ends.
func runcShell(t *testing.T, once bool, log io.Writer) skiffrt.Container {
	t.Helper()
	needRoot(t)
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("skipped: runc not found (install the Debian package runc)")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("skipped: /bin/busybox not found (install the Debian package busybox-static)")
	}
	rt, err := oci.New(oci.Config{Root: t.TempDir(), CgroupParent: "skiff-cri-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close(context.Background()) })
	ctx := context.Background()
	ctr, err := rt.Create(ctx, skiffrt.ContainerSpec{ID: "attach-" + newID(), Layers: []string{busyboxRootfs(t, "sh", "echo")}, Args: []string{"sh"},
		Stdin: true, StdinOnce: once, Stdout: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ctr.Stop(ctx, 0)
		if err := ctr.Remove(ctx); err != nil {
			t.Errorf("remove the container: %v", err)
		}
	})
	if err := ctr.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return ctr
}

// lockedBuffer is a strings.Builder safe for a writer and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAttachRuncSPDY: critest's attach against the real OCI runtime: a
// stdin_once shell; the client types a command and closes stdin; it sees
// the command's output, the shell exits, the session ends with Success.
func TestAttachRuncSPDY(t *testing.T) {
	var log lockedBuffer
	ctr := runcShell(t, true, &log)
	e := newStreamEnv(t)
	id := e.add("runc", ctr)
	res, err := e.svc.Attach(context.Background(), &runtime.AttachRequest{ContainerId: id, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	c := dialSPDY(t, res.Url, crictlProtocols...)
	errs := c.mustStream(headerStreamType, streamTypeError)
	errs.Close()
	stdin := c.mustStream(headerStreamType, streamTypeStdin)
	stdout := c.mustStream(headerStreamType, streamTypeStdout)
	stderr := c.mustStream(headerStreamType, streamTypeStderr)
	stdin.Write([]byte("echo hello\n"))
	stdin.Close()
	got := readAll(t, stdout, stderr, errs)
	if got[0] != "hello\n" || got[1] != "" || got[2] != `{"status":"Success"}` {
		t.Errorf("stdout %q, stderr %q, status %q", got[0], got[1], got[2])
	}
	select {
	case <-ctr.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the shell has not exited 10s after its stdin closed")
	}
	if log.String() != "hello\n" {
		t.Errorf("log %q", log.String())
	}
	waitSessions(t, e.ss)
}

// TestAttachRuncWebSocket: two sessions in turn over WebSocket to a shell
// whose stdin stays open: the first one's output, then the second's.
func TestAttachRuncWebSocket(t *testing.T) {
	ctr := runcShell(t, false, nil)
	e := newStreamEnv(t)
	id := e.add("runc", ctr)
	for _, word := range []string{"first", "second"} {
		res, err := e.svc.Attach(context.Background(), &runtime.AttachRequest{ContainerId: id, Stdin: true, Stdout: true})
		if err != nil {
			t.Fatal(err)
		}
		s := openTTYSession(t, res.Url)
		s.send(chanStdin, "echo "+word+"\n")
		wasmtest.Eventually(t, 10*time.Second, func() bool { return s.channel(chanStdout) == word+"\n" }, func() string { return "stdout " + s.channel(chanStdout) })
		s.c.Write(context.Background(), websocket.MessageBinary, []byte{chanClose, chanStdin})
		select {
		case err := <-s.end:
			if err != nil {
				t.Fatalf("session ended with %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("session open 10s after its stdin closed")
		}
		if s.channel(chanError) != `{"status":"Success"}` {
			t.Errorf("status %q", s.channel(chanError))
		}
	}
	if st := ctr.Status(); st.State != skiffrt.StateRunning {
		t.Errorf("after the sessions: %+v, want running", st)
	}
	waitSessions(t, e.ss)
}
