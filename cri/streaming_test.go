package cri

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/netns"
	skiffrt "skiff.dev/skiff/runtime"
	"skiff.dev/skiff/runtime/image"
)

// fakeExecTask is a running container whose Exec runs run.
type fakeExecTask struct {
	run  func(ctx context.Context, p skiffrt.Process) (int32, error)
	done chan struct{}

	mu    sync.Mutex
	procs []skiffrt.Process // what Exec was asked
}

func (f *fakeExecTask) Start(context.Context) error { return nil }
func (f *fakeExecTask) Stop(context.Context, time.Duration) error {
	return nil
}
func (f *fakeExecTask) Done() <-chan struct{} { return f.done }
func (f *fakeExecTask) Status() skiffrt.Status {
	return skiffrt.Status{State: skiffrt.StateRunning, StartedAt: time.Unix(1, 0)}
}
func (f *fakeExecTask) Stats() skiffrt.Stats         { return skiffrt.Stats{} }
func (f *fakeExecTask) Remove(context.Context) error { return nil }
func (f *fakeExecTask) Exec(ctx context.Context, p skiffrt.Process) (int32, error) {
	f.mu.Lock()
	f.procs = append(f.procs, p)
	f.mu.Unlock()
	return f.run(ctx, p)
}

// noRuntime is a runtime that creates nothing: the tests put tasks in.
type noRuntime struct{}

func (noRuntime) Create(context.Context, skiffrt.ContainerSpec) (skiffrt.Container, error) {
	return nil, errors.New("no runtime")
}
func (noRuntime) Forget(string)               {}
func (noRuntime) Close(context.Context) error { return nil }

// streamEnv is a service with a streaming server on a clock the test
// moves, whose containers are put in directly.
type streamEnv struct {
	t     *testing.T
	svc   *service
	ss    *streamServer
	clock *testClock
}

type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newStreamEnv(t *testing.T) *streamEnv {
	t.Helper()
	root := t.TempDir()
	images, err := image.Open(filepath.Join(root, "images"))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	svc, err := newService(deps{
		log: log, rootDir: root, runtimes: map[string]skiffrt.Runtime{"runc": noRuntime{}},
		images: images, namespaces: newFakeNamespaces(filepath.Join(root, "netns")), network: netns.Loopback{},
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &streamEnv{t: t, svc: svc, clock: &testClock{now: time.Unix(1000, 0)}}
	e.ss = attachStreams(t, svc, log)
	e.ss.now = e.clock.Now
	t.Cleanup(func() { svc.close(context.Background()) })
	return e
}

// attachStreams gives svc a streaming server, closed when the test ends.
func attachStreams(t *testing.T, svc *service, log *slog.Logger) *streamServer {
	t.Helper()
	ss, err := newStreamServer(svc, "", log)
	if err != nil {
		t.Fatal(err)
	}
	svc.streams = ss
	served := make(chan error, 1)
	go func() { served <- ss.serve() }()
	t.Cleanup(func() {
		ss.close()
		if err := <-served; err != nil {
			t.Error(err)
		}
	})
	return ss
}

// add puts a running container with task in a ready sandbox of handler.
func (e *streamEnv) add(handler string, tk task) string {
	sb := &sandbox{rec: sandboxRecord{ID: newID(), Name: "p", Namespace: "default", RuntimeHandler: handler, State: sandboxReady}}
	c := &container{rec: containerRecord{ID: newID(), SandboxID: sb.rec.ID, Name: "c", State: containerRunning}, task: tk}
	e.svc.mu.Lock()
	e.svc.sandboxes[sb.rec.ID] = sb
	e.svc.containers[c.rec.ID] = c
	e.svc.mu.Unlock()
	return c.rec.ID
}

func newFakeTask(run func(ctx context.Context, p skiffrt.Process) (int32, error)) *fakeExecTask {
	return &fakeExecTask{run: run, done: make(chan struct{})}
}

// echo copies stdin to stdout, writes "err" to stderr and exits with the
// number it read first on stdin ("3\n...").
func echo(ctx context.Context, p skiffrt.Process) (int32, error) {
	if p.Stderr != nil {
		io.WriteString(p.Stderr, "err")
	}
	if p.Stdin == nil {
		io.WriteString(p.Stdout, strings.Join(p.Args, " "))
		return 0, nil
	}
	b, err := io.ReadAll(p.Stdin)
	if err != nil {
		return 0, err
	}
	p.Stdout.Write(b)
	first, _, _ := strings.Cut(string(b), "\n")
	code, _ := strconv.Atoi(first)
	return int32(code), nil
}

func TestExecSync(t *testing.T) {
	e := newStreamEnv(t)
	ctx := context.Background()
	tk := newFakeTask(func(ctx context.Context, p skiffrt.Process) (int32, error) {
		switch p.Args[0] {
		case "big":
			chunk := bytes.Repeat([]byte("x"), 1<<20)
			for range 17 {
				p.Stdout.Write(chunk)
			}
			return 0, nil
		case "sleep":
			<-ctx.Done()
			return -1, ctx.Err()
		}
		io.WriteString(p.Stdout, "out:"+strings.Join(p.Args[1:], " "))
		io.WriteString(p.Stderr, "err")
		return 3, nil
	})
	id := e.add("runc", tk)

	res, err := e.svc.ExecSync(ctx, &runtime.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "x"}, Timeout: 5})
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Stdout) != "out:-c x" || string(res.Stderr) != "err" || res.ExitCode != 3 {
		t.Errorf("ExecSync = %q, %q, %d; want %q, %q, 3", res.Stdout, res.Stderr, res.ExitCode, "out:-c x", "err")
	}

	res, err = e.svc.ExecSync(ctx, &runtime.ExecSyncRequest{ContainerId: id, Cmd: []string{"big"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Stdout) != maxExecSyncOutput {
		t.Errorf("17 MiB of output came back as %d bytes, want the first %d", len(res.Stdout), maxExecSyncOutput)
	}

	start := time.Now()
	_, err = e.svc.ExecSync(ctx, &runtime.ExecSyncRequest{ContainerId: id, Cmd: []string{"sleep"}, Timeout: 1})
	wantCode(t, toStatus(err), codes.DeadlineExceeded, "timeout 1s passed")
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("a 1s timeout took %s", d)
	}

	_, err = e.svc.ExecSync(ctx, &runtime.ExecSyncRequest{ContainerId: id})
	wantCode(t, toStatus(err), codes.InvalidArgument, "cmd is empty")
	_, err = e.svc.ExecSync(ctx, &runtime.ExecSyncRequest{ContainerId: "nope", Cmd: []string{"x"}})
	wantCode(t, toStatus(err), codes.NotFound)
}

// TestExecWasmRefused: a Wasm container cannot run a command, and says
// so, for ExecSync and Exec alike; Attach is refused with its reason.
func TestExecWasmRefused(t *testing.T) {
	e := newEnv(t, false)
	attachStreams(t, e.svc, slog.New(slog.DiscardHandler))
	e.importFile("hello", needHello(t))
	pod := e.runPod("p")
	id := e.mustCreate(pod, containerConfig("hello", "hello", "sleep"))
	e.start(id)
	ctx := context.Background()
	_, err := e.rs.ExecSync(ctx, &runtime.ExecSyncRequest{ContainerId: id, Cmd: []string{"ls"}, Timeout: 5})
	wantCode(t, err, codes.Unimplemented, "not supported by the Wasm runtime", "one program")
	_, err = e.rs.Exec(ctx, &runtime.ExecRequest{ContainerId: id, Cmd: []string{"ls"}, Stdout: true})
	wantCode(t, err, codes.Unimplemented, "not supported by the Wasm runtime")
	_, err = e.rs.Attach(ctx, &runtime.AttachRequest{ContainerId: id, Stdout: true})
	wantCode(t, err, codes.Unimplemented, "log")
}

// dialExec opens an exec URL as a client of protocol.
func dialExec(t *testing.T, url, protocol string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, res, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{protocol}})
	if err != nil {
		t.Fatalf("dial %s: %v (response %v)", url, err, res)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// transcript reads a session to its end: what each channel carried.
func transcript(t *testing.T, c *websocket.Conn) map[byte]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[byte]string{}
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
				t.Fatalf("session ended with %v", err)
			}
			return out
		}
		if len(msg) > 0 {
			out[msg[0]] += string(msg[1:])
		}
	}
}

func TestExecStream(t *testing.T) {
	e := newStreamEnv(t)
	ctx := context.Background()
	id := e.add("runc", newFakeTask(echo))
	res, err := e.svc.Exec(ctx, &runtime.ExecRequest{ContainerId: id, Cmd: []string{"cat"}, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.Url, "http://127.0.0.1:") || !strings.Contains(res.Url, "/exec/") {
		t.Fatalf("URL %q", res.Url)
	}
	c := dialExec(t, res.Url, protocolV5)
	for _, m := range [][]byte{append([]byte{chanStdin}, "3\nhello"...), append([]byte{chanStdin}, " there"...), {chanClose, chanStdin}} {
		if err := c.Write(ctx, websocket.MessageBinary, m); err != nil {
			t.Fatal(err)
		}
	}
	got := transcript(t, c)
	if got[chanStdout] != "3\nhello there" || got[chanStderr] != "err" {
		t.Errorf("stdout %q, stderr %q", got[chanStdout], got[chanStderr])
	}
	var st execStatus
	if err := json.Unmarshal([]byte(got[chanError]), &st); err != nil {
		t.Fatalf("status %q: %v", got[chanError], err)
	}
	if st.Status != "Failure" || st.Reason != "NonZeroExitCode" || st.Details == nil || st.Details.Causes[0].Reason != "ExitCode" || st.Details.Causes[0].Message != "3" {
		t.Errorf("status = %s", got[chanError])
	}

	// A command without stdin that exits 0, over v4: status Success.
	res, err = e.svc.Exec(ctx, &runtime.ExecRequest{ContainerId: id, Cmd: []string{"echo", "hi"}, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	got = transcript(t, dialExec(t, res.Url, protocolV4))
	if got[chanStdout] != "echo hi" || got[chanError] != `{"status":"Success"}` || got[chanStderr] != "" {
		t.Errorf("transcript = %q", got)
	}

	for _, c := range []struct {
		req  *runtime.ExecRequest
		want string
	}{
		{&runtime.ExecRequest{ContainerId: id, Stdout: true}, "cmd is empty"},
		{&runtime.ExecRequest{ContainerId: id, Cmd: []string{"x"}, Tty: true, Stderr: true}, "tty and stderr"},
		{&runtime.ExecRequest{ContainerId: id, Cmd: []string{"x"}}, "one of stdin, stdout and stderr"},
	} {
		_, err := e.svc.Exec(ctx, c.req)
		wantCode(t, toStatus(err), codes.InvalidArgument, c.want)
	}
}

// TestExecKilledWhenClientLeaves: a client that goes away ends the
// command (its context).
func TestExecKilledWhenClientLeaves(t *testing.T) {
	e := newStreamEnv(t)
	ended := make(chan struct{})
	id := e.add("runc", newFakeTask(func(ctx context.Context, p skiffrt.Process) (int32, error) {
		io.WriteString(p.Stdout, "started")
		<-ctx.Done()
		close(ended)
		return 137, nil
	}))
	res, err := e.svc.Exec(context.Background(), &runtime.ExecRequest{ContainerId: id, Cmd: []string{"sleep"}, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	c := dialExec(t, res.Url, protocolV5)
	if _, msg, err := c.Read(context.Background()); err != nil || string(msg) != "\x01started" {
		t.Fatalf("first message %q, %v", msg, err)
	}
	c.CloseNow()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the command still runs 10s after its client left")
	}
}

// TestStreamTokens: a URL opens once, within a minute, and a client that
// asks for URLs without opening them cannot hold more than a bound.
func TestStreamTokens(t *testing.T) {
	e := newStreamEnv(t)
	ctx := context.Background()
	id := e.add("runc", newFakeTask(echo))
	req := &runtime.ExecRequest{ContainerId: id, Cmd: []string{"echo"}, Stdout: true}
	status := func(url string) (int, string) {
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}

	res, _ := e.svc.Exec(ctx, req)
	transcript(t, dialExec(t, res.Url, protocolV5))
	if code, body := status(res.Url); code != http.StatusNotFound || !strings.Contains(body, "unknown or expired token") {
		t.Errorf("second open: %d %q, want 404 unknown or expired token", code, body)
	}

	res, _ = e.svc.Exec(ctx, req)
	e.clock.add(tokenTTL + time.Second)
	if code, _ := status(res.Url); code != http.StatusNotFound {
		t.Errorf("open after %s: %d, want 404", tokenTTL+time.Second, code)
	}
	if code, _ := status(e.ss.base + "/exec/bogus"); code != http.StatusNotFound {
		t.Errorf("unknown token: %d, want 404", code)
	}
	// An exec token does not open a port-forward.
	res, _ = e.svc.Exec(ctx, req)
	pf := strings.Replace(res.Url, "/exec/", "/portforward/", 1) + "?port=80"
	if code, _ := status(pf); code != http.StatusNotFound {
		t.Errorf("exec token as a port-forward: %d, want 404", code)
	}

	for range maxPendingTokens {
		if _, err := e.svc.Exec(ctx, req); err != nil {
			wantCode(t, toStatus(err), codes.Unavailable, "pending")
			break
		}
	}
	_, err := e.svc.Exec(ctx, req)
	wantCode(t, toStatus(err), codes.Unavailable, "pending")
	e.clock.add(tokenTTL)
	if _, err := e.svc.Exec(ctx, req); err != nil {
		t.Errorf("after the pending URLs expired: %v", err)
	}
}

// readForward reads a port-forward session's port header on channels 0
// and 1, then the data of channel 0 until the session ends or an error
// arrives on channel 1.
func readForward(t *testing.T, c *websocket.Conn, port uint16) (data, errMsg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	headers := 0
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			return data, errMsg
		}
		if len(msg) == 0 {
			continue
		}
		if headers < 2 {
			if len(msg) != 3 || binary.LittleEndian.Uint16(msg[1:]) != port {
				t.Fatalf("header %d = %v, want channel %d and port %d", headers, msg, headers, port)
			}
			headers++
			continue
		}
		switch msg[0] {
		case 0:
			data += string(msg[1:])
		case 1:
			errMsg += string(msg[1:])
		}
	}
}

// forward opens a port-forward of port to sandbox and sends an HTTP GET.
func forward(t *testing.T, svc *service, sandbox string, port uint16) (string, string) {
	t.Helper()
	ctx := context.Background()
	res, err := svc.PortForward(ctx, &runtime.PortForwardRequest{PodSandboxId: sandbox})
	if err != nil {
		t.Fatal(err)
	}
	c := dialExec(t, res.Url+"?port="+strconv.Itoa(int(port)), protocolV4)
	c.Write(ctx, websocket.MessageBinary, append([]byte{0}, "GET / HTTP/1.0\r\nHost: pod\r\n\r\n"...))
	return readForward(t, c, port)
}

// TestPortForwardWasm: a Wasm pod's declared port is reached through the
// streaming server; a port nothing listens on gets the error on channel 1.
func TestPortForwardWasm(t *testing.T) {
	e := newEnv(t, false)
	ss := attachStreams(t, e.svc, slog.New(slog.DiscardHandler))
	fake := e.ns.(*fakeNamespaces)
	ss.dial = func(ctx context.Context, _, network, address string) (net.Conn, error) {
		_, p, _ := net.SplitHostPort(address)
		port, _ := strconv.Atoi(p)
		if a := fake.addr(port); a != "" {
			address = a
		} else {
			address = "127.0.0.1:1" // refused
		}
		var d net.Dialer
		return d.DialContext(ctx, network, address)
	}
	e.importFile("server", needServer(t))
	pod := e.runPod("web")
	id := e.mustCreate(pod, serverConfig("web", "hello"))
	e.start(id)
	e.waitLog(id, "serving 8080:3")
	data, errMsg := forward(t, e.svc, pod, 8080)
	if !strings.HasSuffix(data, "\r\n\r\nhello 8080\n") || errMsg != "" {
		t.Errorf("forwarded GET = %q, error %q; want the body hello 8080", data, errMsg)
	}
	_, errMsg = forward(t, e.svc, pod, 9090)
	if !strings.Contains(errMsg, "forward port 9090") || !strings.Contains(errMsg, "refused") {
		t.Errorf("error of a closed port = %q", errMsg)
	}
	_, err := e.rs.PortForward(context.Background(), &runtime.PortForwardRequest{PodSandboxId: "nope"})
	wantCode(t, err, codes.NotFound)
}

// TestPortForwardNetns: the streaming server dials inside the sandbox's
// own network namespace, where a listener of the test waits (root).
func TestPortForwardNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: creating a network namespace needs root")
	}
	e := newStreamEnv(t)
	dir := t.TempDir()
	path, err := netns.Create(dir, "pf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Delete(path) })
	serveInNamespace(t, path, 8080)
	// The node's own 127.0.0.1:8080 must not be what answers.
	if c, err := net.DialTimeout("tcp", "127.0.0.1:8080", time.Second); err == nil {
		c.Close()
		t.Log("note: the node's 127.0.0.1:8080 accepts connections too; the body tells them apart")
	}
	sb := &sandbox{rec: sandboxRecord{ID: newID(), RuntimeHandler: "runc", State: sandboxReady, NetNSPath: path}}
	e.svc.mu.Lock()
	e.svc.sandboxes[sb.rec.ID] = sb
	e.svc.mu.Unlock()
	data, errMsg := forward(t, e.svc, sb.rec.ID, 8080)
	if !strings.HasSuffix(data, "\r\n\r\ninside the namespace") || errMsg != "" {
		t.Errorf("forwarded GET = %q, error %q", data, errMsg)
	}
}

// serveInNamespace serves "inside the namespace" over HTTP on port in the
// network namespace at path until the test ends.
func serveInNamespace(t *testing.T, path string, port int) {
	t.Helper()
	f, err := netns.ListenTCP(path, port)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "inside the namespace")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}
