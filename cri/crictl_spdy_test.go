package cri

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"skiff.dev/skiff/runtime/image"
	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

// TestCrictlSPDY drives the streaming server with crictl's default
// transport, SPDY: port-forward to a Wasm pod's port (several connections,
// and a port nothing listens on), and exec and attach, which a Wasm
// container refuses with its reason.
func TestCrictlSPDY(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: pods get network namespaces")
	}
	bin, err := exec.LookPath("crictl")
	if err != nil {
		t.Skip("crictl is not in PATH: go install sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0")
	}
	server := needServer(t)
	tmp := t.TempDir()
	images, err := image.Open(filepath.Join(tmp, "images"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(server)
	if err != nil {
		t.Fatal(err)
	}
	_, err = images.Import(t.Context(), "server", f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	cfg, sock, _ := serveCrictl(t, images, tmp)
	c := crictl{t: t, bin: bin, cfg: cfg, sock: sock}
	podJSON := filepath.Join(tmp, "pod.json")
	os.WriteFile(podJSON, fmt.Appendf(nil, `{"metadata": {"name": "web", "namespace": "default", "uid": "web-uid"}, "log_directory": %q, "linux": {}}`, filepath.Join(tmp, "logs")), 0o644)
	ctrJSON := filepath.Join(tmp, "container.json")
	os.WriteFile(ctrJSON, []byte(`{"metadata": {"name": "web"}, "image": {"image": "server"}, "args": ["hello"], "log_path": "web.log",
  "annotations": {"io.kubernetes.container.ports": "[{\"name\":\"http\",\"containerPort\":8080,\"protocol\":\"TCP\"}]"}, "linux": {}}`), 0o644)
	pod := strings.TrimSpace(c.ok("runp", podJSON))
	t.Cleanup(func() { c.run("rmp", "-f", pod) })
	ctr := strings.TrimSpace(c.ok("create", pod, ctrJSON, podJSON))
	c.ok("start", ctr)

	wantContains(t, "crictl exec", c.fails("exec", ctr, "ls"), "not supported by the Wasm runtime")
	wantContains(t, "crictl attach", c.fails("attach", ctr), "Unimplemented", "no terminal to attach to")

	forward := func(remote int) (port int, out *syncBuffer) {
		port = freePort(t)
		out = &syncBuffer{}
		cmd := exec.Command(bin, "--config", cfg, "--runtime-endpoint", "unix://"+sock, "port-forward", pod, fmt.Sprintf("%d:%d", port, remote))
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			t.Logf("$ crictl port-forward %s %d:%d\n%s", pod, port, remote, out.String())
		})
		wasmtest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(out.String(), "Forwarding from 127.0.0.1") },
			func() string { return "crictl port-forward printed " + out.String() })
		return port, out
	}
	port, _ := forward(8080)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/"
	var body string
	// The module may still be starting to listen.
	wasmtest.Eventually(t, 10*time.Second, func() bool {
		res, err := client.Get(url)
		if err != nil {
			return false
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		body = string(b)
		return true
	}, func() string { return "no answer through crictl port-forward" })
	if body != "hello 8080\n" {
		t.Errorf("GET through crictl port-forward = %q, want hello 8080", body)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := client.Get(url)
			if err != nil {
				t.Error(err)
				return
			}
			defer res.Body.Close()
			if b, _ := io.ReadAll(res.Body); string(b) != "hello 8080\n" {
				t.Errorf("concurrent GET = %q", b)
			}
		}()
	}
	wg.Wait()

	closed, out := forward(9090)
	if conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(closed), 5*time.Second); err == nil {
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, "GET / HTTP/1.0\r\n\r\n")
		io.ReadAll(conn)
		conn.Close()
	}
	wasmtest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(out.String(), "forward port 9090 to sandbox "+pod) },
		func() string { return "crictl port-forward to a closed port printed " + out.String() })
	wantContains(t, "crictl port-forward to a closed port", out.String(), "connection refused")
}

// freePort returns a port of 127.0.0.1 nothing listened on a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// syncBuffer is a buffer a process writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
