package cri

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/spdystream"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/netns"
	skiffrt "skiff.dev/skiff/runtime"
	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

// spdyClient is the client side of a SPDY session, as client-go's
// (crictl's): it creates the streams.
type spdyClient struct {
	t        *testing.T
	conn     *spdystream.Connection
	protocol string // the server's choice

	mu      sync.Mutex
	streams []*spdystream.Stream
}

// crictlProtocols are the exec protocols crictl v1.37 asks for.
var crictlProtocols = []string{protocolV5, protocolV4, protocolV3, protocolV2, protocolV1}

// upgradeRequest sends an upgrade request for rawURL on a new connection
// and reads the response.
func upgradeRequest(t *testing.T, method, rawURL string, header http.Header) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	req, err := http.NewRequest(method, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := req.Write(nc); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	res, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, br, res
}

func spdyHeader(protocols ...string) http.Header {
	h := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"SPDY/3.1"}}
	for _, p := range protocols {
		h.Add(headerProtocolVersion, p)
	}
	return h
}

// refusedSPDY opens rawURL and returns the status and body of a refusal.
func refusedSPDY(t *testing.T, method, rawURL string, header http.Header) (*http.Response, string) {
	t.Helper()
	_, _, res := upgradeRequest(t, method, rawURL, header)
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode == http.StatusSwitchingProtocols {
		t.Fatalf("%s %s upgraded, want a refusal", method, rawURL)
	}
	return res, string(b)
}

// dialSPDY opens rawURL with POST, as crictl does, asking for protocols.
func dialSPDY(t *testing.T, rawURL string, protocols ...string) *spdyClient {
	t.Helper()
	nc, br, res := upgradeRequest(t, http.MethodPost, rawURL, spdyHeader(protocols...))
	if res.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("POST %s: %s %q, want 101 Switching Protocols", rawURL, res.Status, b)
	}
	if !headerHas(res.Header, "Upgrade", "spdy/3.1") || !headerHas(res.Header, "Connection", "upgrade") {
		t.Fatalf("upgrade response headers %v", res.Header)
	}
	conn, err := spdystream.NewConnection(deadlineConn{Conn: nc, r: br}, false)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetCloseTimeout(time.Second)
	served := make(chan struct{})
	go func() {
		defer close(served)
		conn.Serve(spdystream.NoOpStreamHandler)
	}()
	c := &spdyClient{t: t, conn: conn, protocol: res.Header.Get(headerProtocolVersion)}
	t.Cleanup(func() {
		c.mu.Lock()
		for _, st := range c.streams {
			st.Reset()
		}
		c.mu.Unlock()
		conn.Close()
		conn.Wait(5 * time.Second)
		nc.Close()
		<-served
	})
	return c
}

// stream creates a stream with headers (key, value pairs) and waits for
// the server's reply: an error if it refused the stream.
func (c *spdyClient) stream(kv ...string) (*spdystream.Stream, error) {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	st, err := c.conn.CreateStream(h, nil, false)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.streams = append(c.streams, st)
	c.mu.Unlock()
	return st, st.WaitTimeout(5 * time.Second)
}

func (c *spdyClient) mustStream(kv ...string) *spdystream.Stream {
	c.t.Helper()
	st, err := c.stream(kv...)
	if err != nil {
		c.t.Fatalf("create stream %v: %v", kv, err)
	}
	return st
}

// readAll reads streams to their ends, at once, within 10s.
func readAll(t *testing.T, streams ...io.Reader) []string {
	t.Helper()
	out := make([]string, len(streams))
	var wg sync.WaitGroup
	for i, st := range streams {
		if st == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, _ := io.ReadAll(st)
			out[i] = string(b)
		}()
	}
	read := make(chan struct{})
	go func() { wg.Wait(); close(read) }()
	select {
	case <-read:
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not end its streams within 10s")
	}
	return out
}

// waitSessions waits until no streaming session holds a seat.
func waitSessions(t *testing.T, ss *streamServer) {
	t.Helper()
	wasmtest.Eventually(t, 10*time.Second, func() bool { return len(ss.seats) == 0 },
		func() string { return fmt.Sprintf("%d streaming sessions still hold a seat", len(ss.seats)) })
}

// TestExecSPDY drives exec over SPDY as crictl does: stdin, stdout,
// stderr and the exit code through the error stream, in each protocol.
func TestExecSPDY(t *testing.T) {
	e := newStreamEnv(t)
	ctx := context.Background()
	id := e.add("runc", newFakeTask(echo))
	res, err := e.svc.Exec(ctx, &runtime.ExecRequest{ContainerId: id, Cmd: []string{"cat"}, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	c := dialSPDY(t, res.Url, crictlProtocols...)
	if c.protocol != protocolV5 {
		t.Errorf("negotiated %q, want %q (the client's first choice)", c.protocol, protocolV5)
	}
	if _, err := c.conn.Ping(); err != nil {
		t.Errorf("ping: %v", err)
	}
	errs := c.mustStream(headerStreamType, streamTypeError)
	errs.Close() // the client does not write to it
	stdin := c.mustStream(headerStreamType, streamTypeStdin)
	stdout := c.mustStream(headerStreamType, streamTypeStdout)
	stderr := c.mustStream(headerStreamType, streamTypeStderr)
	for _, s := range []string{"3\nhello", " there"} {
		if _, err := stdin.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	stdin.Close()
	got := readAll(t, stdout, stderr, errs)
	if got[0] != "3\nhello there" || got[1] != "err" {
		t.Errorf("stdout %q, stderr %q; want %q, %q", got[0], got[1], "3\nhello there", "err")
	}
	var st execStatus
	if err := json.Unmarshal([]byte(got[2]), &st); err != nil {
		t.Fatalf("status %q: %v", got[2], err)
	}
	if st.Status != "Failure" || st.Reason != "NonZeroExitCode" || st.Details == nil || len(st.Details.Causes) != 1 ||
		st.Details.Causes[0].Reason != "ExitCode" || st.Details.Causes[0].Message != "3" {
		t.Errorf("status = %s, want NonZeroExitCode with cause ExitCode 3", got[2])
	}

	for _, tc := range []struct {
		name, protocol string
		cmd            []string
		stdin          string
		wantOut        string
		wantStatus     string
	}{
		{"v4 success", protocolV4, []string{"echo", "hi"}, "", "echo hi", `{"status":"Success"}`},
		{"v3 success says nothing", protocolV3, []string{"echo", "hi"}, "", "echo hi", ""},
		{"v2 failure as text", protocolV2, []string{"cat"}, "7\n", "7\n", "command terminated with non-zero exit code: exit status 7"},
		{"v1", protocolV1, []string{"echo", "v1"}, "", "echo v1", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &runtime.ExecRequest{ContainerId: id, Cmd: tc.cmd, Stdout: true, Stdin: tc.stdin != ""}
			res, err := e.svc.Exec(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			c := dialSPDY(t, res.Url, tc.protocol)
			if c.protocol != tc.protocol {
				t.Fatalf("negotiated %q, want %q", c.protocol, tc.protocol)
			}
			errs := c.mustStream(headerStreamType, streamTypeError)
			if tc.stdin != "" {
				in := c.mustStream(headerStreamType, streamTypeStdin)
				in.Write([]byte(tc.stdin))
				in.Close()
			}
			out := c.mustStream(headerStreamType, streamTypeStdout)
			got := readAll(t, out, errs)
			if got[0] != tc.wantOut || got[1] != tc.wantStatus {
				t.Errorf("stdout %q, error stream %q; want %q, %q", got[0], got[1], tc.wantOut, tc.wantStatus)
			}
		})
	}
	waitSessions(t, e.ss)
}

// TestExecSPDYTerminal: a terminal's sizes come on the resize stream, one
// JSON line each, to the process's Resize channel.
func TestExecSPDYTerminal(t *testing.T) {
	e := newStreamEnv(t)
	id := e.add("runc", newFakeTask(func(ctx context.Context, p skiffrt.Process) (int32, error) {
		if !p.TTY || p.Resize == nil || p.Stderr != nil {
			return 1, fmt.Errorf("process TTY %v, resize %v, stderr %v: want a terminal", p.TTY, p.Resize, p.Stderr)
		}
		for {
			select {
			case size := <-p.Resize:
				fmt.Fprintf(p.Stdout, "%dx%d\r\n", size.Width, size.Height)
				if size.Width == 100 {
					return 0, nil
				}
			case <-ctx.Done():
				return -1, ctx.Err()
			}
		}
	}))
	res, err := e.svc.Exec(context.Background(), &runtime.ExecRequest{ContainerId: id, Cmd: []string{"sh"}, Tty: true, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	c := dialSPDY(t, res.Url, crictlProtocols...)
	errs := c.mustStream(headerStreamType, streamTypeError)
	out := c.mustStream(headerStreamType, streamTypeStdout)
	resize := c.mustStream(headerStreamType, streamTypeResize)
	// The first size is waited for before the next is sent: the latest
	// size wins over one the process has not taken.
	if _, err := resize.Write([]byte(`{"Width":80,"Height":24}` + "\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "80x24\r\n" {
		t.Fatalf("first line %q, %v; want 80x24", line, err)
	}
	if _, err := resize.Write([]byte("not a size\n" + `{"Width":100,"Height":40}` + "\n")); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, out, errs)
	if got[0] != "100x40\r\n" || got[1] != `{"status":"Success"}` {
		t.Errorf("stdout %q, status %q; want the second size and Success", got[0], got[1])
	}
	waitSessions(t, e.ss)
}

// TestExecSPDYClientLeaves: a client that goes away, before or after
// creating its streams, ends the command and the session.
func TestExecSPDYClientLeaves(t *testing.T) {
	e := newStreamEnv(t)
	started := make(chan struct{}, 1)
	ended := make(chan struct{}, 1)
	id := e.add("runc", newFakeTask(func(ctx context.Context, p skiffrt.Process) (int32, error) {
		started <- struct{}{}
		io.WriteString(p.Stdout, "started")
		<-ctx.Done()
		ended <- struct{}{}
		return 137, nil
	}))
	req := &runtime.ExecRequest{ContainerId: id, Cmd: []string{"sleep"}, Stdin: true, Stdout: true}
	res, err := e.svc.Exec(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	c := dialSPDY(t, res.Url, crictlProtocols...)
	c.mustStream(headerStreamType, streamTypeError)
	c.mustStream(headerStreamType, streamTypeStdin)
	out := c.mustStream(headerStreamType, streamTypeStdout)
	buf := make([]byte, 7)
	if _, err := io.ReadFull(out, buf); err != nil || string(buf) != "started" {
		t.Fatalf("stdout %q, %v", buf, err)
	}
	c.conn.Close() // go away
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the command still runs 10s after its client left")
	}
	<-started
	waitSessions(t, e.ss)

	// Gone before creating all its streams: the command never starts.
	res, err = e.svc.Exec(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	c = dialSPDY(t, res.Url, crictlProtocols...)
	c.mustStream(headerStreamType, streamTypeError)
	c.conn.Close()
	waitSessions(t, e.ss)
	select {
	case <-started:
		t.Error("the command started without its streams")
	default:
	}
}

// TestSPDYRefusals: what a SPDY client is told when it cannot have a
// session, and that a refusal before the token is used keeps it.
func TestSPDYRefusals(t *testing.T) {
	e := newStreamEnv(t)
	ctx := context.Background()
	id := e.add("runc", newFakeTask(echo))
	req := &runtime.ExecRequest{ContainerId: id, Cmd: []string{"echo", "hi"}, Stdout: true}
	res, err := e.svc.Exec(ctx, req)
	if err != nil {
		t.Fatal(err)
	}

	r, body := refusedSPDY(t, http.MethodPost, res.Url, spdyHeader("v9.channel.k8s.io"))
	if r.StatusCode != http.StatusForbidden || !strings.Contains(body, "v9.channel.k8s.io") || !strings.Contains(body, protocolV4) {
		t.Errorf("unknown protocol: %s %q, want 403 naming both sides' protocols", r.Status, body)
	}
	if got := r.Header.Values(headerAcceptedProtocols); strings.Join(got, ",") != strings.Join(spdyExecProtocols, ",") {
		t.Errorf("%s = %v, want %v", headerAcceptedProtocols, got, spdyExecProtocols)
	}
	r, body = refusedSPDY(t, http.MethodPost, res.Url, spdyHeader())
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(body, headerProtocolVersion) {
		t.Errorf("no protocol: %s %q, want 400 naming %s", r.Status, body, headerProtocolVersion)
	}
	r, body = refusedSPDY(t, http.MethodPut, res.Url, spdyHeader(protocolV4))
	if r.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(body, "GET or POST") {
		t.Errorf("PUT: %s %q, want 405", r.Status, body)
	}
	r, body = refusedSPDY(t, http.MethodPost, res.Url, http.Header{})
	if r.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(body, "Upgrade: SPDY/3.1") {
		t.Errorf("POST without upgrade: %s %q, want 405 saying how to open it", r.Status, body)
	}

	// The token survived those; a stream of no expected role is refused.
	c := dialSPDY(t, res.Url, protocolV4)
	if _, err := c.stream(headerStreamType, streamTypeStdin); err == nil {
		t.Error("a stdin stream for a command without stdin was accepted")
	}
	errs := c.mustStream(headerStreamType, streamTypeError)
	out := c.mustStream(headerStreamType, streamTypeStdout)
	if got := readAll(t, out, errs); got[0] != "echo hi" {
		t.Errorf("stdout %q", got[0])
	}

	r, body = refusedSPDY(t, http.MethodPost, res.Url, spdyHeader(protocolV4))
	if r.StatusCode != http.StatusNotFound || !strings.Contains(body, "unknown or expired token") {
		t.Errorf("second open: %s %q, want 404 unknown or expired token", r.Status, body)
	}
	res, _ = e.svc.Exec(ctx, req)
	e.clock.add(tokenTTL + time.Second)
	if r, _ := refusedSPDY(t, http.MethodPost, res.Url, spdyHeader(protocolV4)); r.StatusCode != http.StatusNotFound {
		t.Errorf("open after %s: %s, want 404", tokenTTL+time.Second, r.Status)
	}

	// A container gone since the URL was made: the client is told why.
	res, _ = e.svc.Exec(ctx, req)
	e.svc.mu.Lock()
	delete(e.svc.containers, id)
	e.svc.mu.Unlock()
	c = dialSPDY(t, res.Url, crictlProtocols...)
	errs = c.mustStream(headerStreamType, streamTypeError)
	out = c.mustStream(headerStreamType, streamTypeStdout)
	got := readAll(t, out, errs)
	var st execStatus
	if err := json.Unmarshal([]byte(got[1]), &st); err != nil || st.Status != "Failure" || !strings.Contains(st.Message, id) {
		t.Errorf("status of an exec in a removed container = %q, want a Failure naming it", got[1])
	}
	waitSessions(t, e.ss)
}

// forwardSPDY forwards one connection to port over c, as client-go
// does, sends an HTTP GET and returns what came back on the data and
// error streams.
func forwardSPDY(t *testing.T, c *spdyClient, requestID string, port uint16) (data, errMsg string) {
	t.Helper()
	p := strconv.Itoa(int(port))
	errs := c.mustStream(headerStreamType, streamTypeError, headerPort, p, headerRequestID, requestID)
	errs.Close()
	st := c.mustStream(headerStreamType, streamTypeData, headerPort, p, headerRequestID, requestID)
	st.Write([]byte("GET / HTTP/1.0\r\nHost: pod\r\n\r\n"))
	// The data stream ends when the pod's side does; then the client
	// resets it and reads the error stream.
	data = readAll(t, st)[0]
	st.Reset()
	return data, readAll(t, errs)[0]
}

// TestPortForwardSPDYNetns: over SPDY, each pair of streams is one
// connection to the port inside the sandbox's own network namespace
// (root); a port nothing listens on gets the reason on the error stream.
func TestPortForwardSPDYNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: creating a network namespace needs root")
	}
	e := newStreamEnv(t)
	path, err := netns.Create(t.TempDir(), "pfspdy")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Delete(path) })
	serveInNamespace(t, path, 8080)
	sb := &sandbox{rec: sandboxRecord{ID: newID(), RuntimeHandler: "runc", State: sandboxReady, NetNSPath: path}}
	e.svc.mu.Lock()
	e.svc.sandboxes[sb.rec.ID] = sb
	e.svc.mu.Unlock()

	res, err := e.svc.PortForward(context.Background(), &runtime.PortForwardRequest{PodSandboxId: sb.rec.ID, Port: []int32{8080}})
	if err != nil {
		t.Fatal(err)
	}
	r, body := refusedSPDY(t, http.MethodPost, res.Url, spdyHeader(protocolV4))
	if r.StatusCode != http.StatusForbidden || !strings.Contains(body, protocolPortForward) {
		t.Errorf("exec protocol on a port-forward URL: %s %q", r.Status, body)
	}
	c := dialSPDY(t, res.Url, protocolPortForward)
	if c.protocol != protocolPortForward {
		t.Errorf("negotiated %q", c.protocol)
	}
	// Several connections, one after another and at once, on one session.
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data, errMsg := forwardSPDY(t, c, strconv.Itoa(i), 8080)
			if !strings.HasSuffix(data, "\r\n\r\ninside the namespace") || errMsg != "" {
				t.Errorf("request %d: forwarded GET = %q, error %q", i, data, errMsg)
			}
		}()
	}
	wg.Wait()
	if data, errMsg := forwardSPDY(t, c, "3", 8080); !strings.HasSuffix(data, "inside the namespace") || errMsg != "" {
		t.Errorf("forwarded GET = %q, error %q", data, errMsg)
	}
	_, errMsg := forwardSPDY(t, c, "4", 9090)
	if !strings.Contains(errMsg, "forward port 9090 to sandbox "+sb.rec.ID) || !strings.Contains(errMsg, "refused") {
		t.Errorf("error of a closed port = %q", errMsg)
	}
	// A stream without a port is refused; the session goes on.
	if _, err := c.stream(headerStreamType, streamTypeData, headerRequestID, "5"); err == nil {
		t.Error("a data stream without a port header was accepted")
	}
	if data, _ := forwardSPDY(t, c, "6", 8080); !strings.HasSuffix(data, "inside the namespace") {
		t.Errorf("after a refused stream: %q", data)
	}
	c.conn.Close()
	waitSessions(t, e.ss)
}

// TestSPDYServerClose: closing the streaming server ends its SPDY
// sessions: the command is killed and the client's connection ends.
func TestSPDYServerClose(t *testing.T) {
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
	c := dialSPDY(t, res.Url, crictlProtocols...)
	c.mustStream(headerStreamType, streamTypeError)
	out := c.mustStream(headerStreamType, streamTypeStdout)
	buf := make([]byte, 7)
	if _, err := io.ReadFull(out, buf); err != nil {
		t.Fatal(err)
	}
	e.ss.close()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the command still runs 10s after the server closed")
	}
	select {
	case <-c.conn.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("the client's connection is still open 10s after the server closed")
	}
}
