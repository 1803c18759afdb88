package wasm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startServer starts testdata/server with one declared port (8080) whose
// socket listens on an ephemeral port of 127.0.0.1, and returns the
// container and the address it answers on.
func startServer(t *testing.T, r *Runtime, id string) (*Container, string, *syncBuffer) {
	t.Helper()
	var addr string
	listen := func(port int) (*os.File, error) {
		f, err := listenLoopback(port)
		if err != nil {
			return nil, err
		}
		if err := rawFD(f, func(fd int) { addr = boundAddr(t, fd) }); err != nil {
			f.Close()
			return nil, err
		}
		return f, nil
	}
	var out syncBuffer
	c, err := r.Create(context.Background(), ContainerSpec{ID: id, ImageID: "server", ImagePath: serverPath, Args: []string{"server"}, Stdout: &out, Stderr: &out, Ports: []int{8080}, Listen: listen})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop(context.Background(), 0) })
	waitOutput(t, &out, "serving 8080:3\n")
	return c, addr, &out
}

// listenLoopback listens on an ephemeral port of 127.0.0.1, whatever port.
func listenLoopback(int) (*os.File, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	return ln.(*net.TCPListener).File() // a duplicate, non-blocking like the original
}

// boundAddr is the address the socket fd is bound to.
func boundAddr(t *testing.T, fd int) string {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Error(err)
		return ""
	}
	in4 := sa.(*unix.SockaddrInet4)
	return netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port)).String()
}

// probe is an HTTP GET as the agent's probes make it, with two seconds to
// answer (twice the kubelet's default, for a loaded test machine).
func probe(addr, path string) (string, error) {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	return string(b), nil
}

// TestSockets: a Go module serves HTTP on its pre-opened socket, many
// requests at once and a response larger than the socket's buffers, uses
// no CPU while it waits for connections, stops gracefully on request, and
// its listener is closed once it has exited.
func TestSockets(t *testing.T) {
	r := newRuntime(t, Config{})
	c, addr, out := startServer(t, r, "server")
	if got, err := probe(addr, "/"); err != nil || got != "ok 8080\n" {
		t.Fatalf("GET / = %q, %v; want %q", got, err, "ok 8080\n")
	}

	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got, err := probe(addr, "/"); err != nil || got != "ok 8080\n" {
				errs <- fmt.Errorf("GET / = %q, %v", got, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	const big = 4 << 20
	if got, err := probe(addr, fmt.Sprintf("/size/%d", big)); err != nil || len(got) != big || strings.Trim(got, "x") != "" {
		t.Errorf("GET /size/%d = %d bytes, %v", big, len(got), err)
	}

	// Idle: waiting for connections costs no CPU (a window, not a wait
	// for a condition).
	before := c.Stats().CPUTime
	time.Sleep(500 * time.Millisecond)
	if used := c.Stats().CPUTime - before; used > 50*time.Millisecond {
		t.Errorf("the idle server used %v of CPU in 500ms; it should wait in the kernel", used)
	}

	if err := c.Stop(context.Background(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if st := c.Status(); st.ExitCode != 0 || st.Reason != ReasonCompleted || !strings.Contains(out.String(), "terminating") {
		t.Errorf("after a graceful stop: %+v, output %q; want exit 0 after \"terminating\"", st, out.String())
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Errorf("%s still accepts connections after the container exited", addr)
	}
}

// TestSocketsKill: a module waiting for connections is killed at once.
func TestSocketsKill(t *testing.T) {
	r := newRuntime(t, Config{})
	c, addr, _ := startServer(t, r, "server")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Stop(ctx, 0); err != nil {
		t.Fatalf("kill of a module waiting for connections: %v", err)
	}
	if st := c.Status(); st.ExitCode != ExitCodeStopped {
		t.Errorf("status = %+v; want exit %d", st, ExitCodeStopped)
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Errorf("%s still accepts connections after the kill", addr)
	}
}

// TestSocketsRefused: ports need a Listen function and must be ports; a
// port that cannot be listened on fails the start, naming it.
func TestSocketsRefused(t *testing.T) {
	r := newRuntime(t, Config{})
	for _, spec := range []ContainerSpec{
		{Ports: []int{8080}},
		{Ports: []int{0}, Listen: listenLoopback},
		{Ports: []int{8080, 8080}, Listen: listenLoopback},
	} {
		spec.ID, spec.ImagePath, spec.Args = "bad", serverPath, []string{"server"}
		if _, err := r.Create(context.Background(), spec); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("Create(ports %v) = %v; want ErrInvalidSpec", spec.Ports, err)
		}
	}
	busy := errors.New("port 8080 is taken")
	c, err := r.Create(context.Background(), ContainerSpec{ID: "busy", ImageID: "server", ImagePath: serverPath, Args: []string{"server"}, Ports: []int{8080}, Listen: func(int) (*os.File, error) { return nil, busy }})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); !errors.Is(err, busy) {
		t.Errorf("Start = %v; want the Listen error", err)
	}
	if st := c.Status(); st.Reason != ReasonStartError || !strings.Contains(st.Message, "8080") {
		t.Errorf("status = %+v; want StartError naming port 8080", st)
	}
}
