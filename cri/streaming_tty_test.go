package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffrt "skiff.dev/skiff/runtime"
	"skiff.dev/skiff/runtime/oci"
	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

// TestExecInputAfterEnd: input a client sends once the command no longer
// reads its stdin does not keep the session open.
func TestExecInputAfterEnd(t *testing.T) {
	e := newStreamEnv(t)
	typed := make(chan struct{})
	id := e.add("runc", newFakeTask(func(ctx context.Context, p skiffrt.Process) (int32, error) {
		<-typed // never reads stdin
		return 0, nil
	}))
	res, err := e.svc.Exec(context.Background(), &runtime.ExecRequest{ContainerId: id, Cmd: []string{"true"}, Stdin: true, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	c := dialExec(t, res.Url, protocolV5)
	for range 2 {
		if err := c.Write(context.Background(), websocket.MessageBinary, append([]byte{chanStdin}, "unread\n"...)); err != nil {
			t.Fatal(err)
		}
	}
	close(typed)
	if got := transcript(t, c); got[chanError] != `{"status":"Success"}` {
		t.Errorf("transcript = %q", got)
	}
	wasmtest.Eventually(t, 10*time.Second, func() bool { return len(e.ss.seats) == 0 },
		func() string { return fmt.Sprintf("%d streaming sessions still open", len(e.ss.seats)) })
}

// ttySession is a client's view of an exec session with a terminal.
type ttySession struct {
	t   *testing.T
	c   *websocket.Conn
	mu  sync.Mutex
	out map[byte]string
	end chan error // the session's end: nil for a normal closure
}

func openTTYSession(t *testing.T, url string) *ttySession {
	s := &ttySession{t: t, c: dialExec(t, url, protocolV5), out: map[byte]string{}, end: make(chan error, 1)}
	go func() {
		for {
			_, msg, err := s.c.Read(context.Background())
			if err != nil {
				if websocket.CloseStatus(err) == websocket.StatusNormalClosure {
					err = nil
				}
				s.end <- err
				return
			}
			if len(msg) > 0 {
				s.mu.Lock()
				s.out[msg[0]] += string(msg[1:])
				s.mu.Unlock()
			}
		}
	}()
	return s
}

func (s *ttySession) send(ch byte, data string) {
	s.t.Helper()
	if err := s.c.Write(context.Background(), websocket.MessageBinary, append([]byte{ch}, data...)); err != nil {
		s.t.Fatalf("send on channel %d: %v", ch, err)
	}
}

func (s *ttySession) resize(width, height int) {
	s.send(chanResize, fmt.Sprintf(`{"Width":%d,"Height":%d}`, width, height))
}

func (s *ttySession) channel(ch byte) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out[ch]
}

// hasLine says whether the terminal's output has line, carriage returns
// and surrounding blanks aside.
func hasLine(out, line string) bool {
	for _, l := range strings.Split(strings.ReplaceAll(out, "\r", ""), "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}

// TestExecTTYRunc: `exec -it` against the real OCI runtime: the command
// has a terminal whose size follows the client's, what the client types
// reaches it, and its exit code is the session's status.
func TestExecTTYRunc(t *testing.T) {
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
	ctr, err := rt.Create(ctx, skiffrt.ContainerSpec{ID: "tty-" + newID(), Layers: []string{busyboxRootfs(t, "sh", "sleep", "stty", "tty")}, Args: []string{"sleep", "1000"}})
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
	e := newStreamEnv(t)
	id := e.add("runc", ctr)

	res, err := e.svc.Exec(ctx, &runtime.ExecRequest{ContainerId: id, Cmd: []string{"sh"}, Tty: true, Stdin: true, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	s := openTTYSession(t, res.Url)
	s.resize(120, 40)
	s.send(chanStdin, "tty\n")
	// The size reaches the terminal at the latest with the next command.
	for _, size := range [][2]int{{120, 40}, {100, 30}} {
		s.resize(size[0], size[1])
		want := fmt.Sprintf("%d %d", size[1], size[0])
		wasmtest.Eventually(t, 10*time.Second, func() bool {
			s.send(chanStdin, "stty size\n")
			return hasLine(s.channel(chanStdout), want)
		}, func() string { return fmt.Sprintf("no line %q in the output %q", want, s.channel(chanStdout)) })
	}
	s.send(chanStdin, "echo h''i; exit 7\n")
	select {
	case err := <-s.end:
		if err != nil {
			t.Fatalf("session ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("session still open 10s after exit 7; output %q", s.channel(chanStdout))
	}
	out := s.channel(chanStdout)
	if !strings.Contains(out, "/dev/pts/") || !hasLine(out, "hi") {
		t.Errorf("output %q, want a /dev/pts path and a line hi", out)
	}
	var st execStatus
	if err := json.Unmarshal([]byte(s.channel(chanError)), &st); err != nil || st.Reason != "NonZeroExitCode" || st.Details == nil || st.Details.Causes[0].Message != "7" {
		t.Errorf("status %q (%v), want exit code 7", s.channel(chanError), err)
	}
	if s.channel(chanStderr) != "" {
		t.Errorf("stderr %q, want nothing (a terminal carries both streams)", s.channel(chanStderr))
	}
}

// busyboxRootfs is a one-layer image of /bin/busybox with applets.
func busyboxRootfs(t *testing.T, applets ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	src, err := os.Open("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(filepath.Join(dir, "bin", "busybox"), os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	for _, a := range applets {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
