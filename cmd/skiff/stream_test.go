package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPortForwardAndExec: skiff port-forward reaches a Wasm pod's declared
// port inside its network namespace, connection after connection, through
// the API server and the agent; skiff exec in the same pod is refused with
// the reason (a Wasm module is one program).
func TestPortForwardAndExec(t *testing.T) {
	c := startDev(t)
	c.mustSkiff("image", "import", "--data-dir", c.dataDir, "server", buildWasm(t, "../../runtime/wasm/testdata/server"))
	c.mustSkiff("apply", "-f", writeFile(t, "web.yaml", webPod))
	eventually(t, 60*time.Second, func() bool { return c.ready("web") == "True" },
		func() string { return "web never became Ready: " + c.ready("web") })

	// skiff port-forward web :8080, until the test ends.
	ctx, cancel := context.WithCancel(context.Background())
	out := &lineWriter{}
	root := newRoot()
	root.SetOut(out)
	root.SetErr(out)
	root.SetArgs([]string{"--server", c.server, "--config", c.config, "port-forward", "web", ":8080"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("skiff port-forward: %v", err)
		}
	})
	addr := regexp.MustCompile(`Forwarding from (127\.0\.0\.1:\d+) -> 8080`)
	var local string
	eventually(t, 10*time.Second, func() bool {
		m := addr.FindStringSubmatch(out.String())
		if m != nil {
			local = m[1]
		}
		return m != nil
	}, func() string { return "skiff port-forward printed " + out.String() })

	for i := range 3 {
		conn, err := net.DialTimeout("tcp", local, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, "GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			conn.Close()
			t.Fatalf("GET %d through the forward: %v (skiff printed %q)", i, err, out.String())
		}
		body, _ := io.ReadAll(res.Body)
		conn.Close()
		if res.StatusCode != 200 || !strings.Contains(string(body), "8080") {
			t.Errorf("GET %d through the forward = %d %q", i, res.StatusCode, body)
		}
	}

	out2, err := c.skiff("exec", "web", "--", "ls", "/")
	var exit exitError
	if err == nil || errors.As(err, &exit) || !strings.Contains(err.Error(), "not supported by the Wasm runtime") {
		t.Errorf("skiff exec in a Wasm pod: %v\n%s; want the refusal naming the Wasm runtime", err, out2)
	}
	if _, err := c.skiff("exec", "nope", "--", "ls"); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("skiff exec in a missing pod: %v", err)
	}
	if _, err := c.skiff("exec", "web", "ls"); err == nil || !strings.Contains(err.Error(), "--") {
		t.Errorf("skiff exec without --: %v", err)
	}
}

// lineWriter is a buffer safe for a command's goroutines.
type lineWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
