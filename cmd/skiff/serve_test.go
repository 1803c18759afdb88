package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/serve"
	"skiff.dev/skiff/control/apiserver"
	"skiff.dev/skiff/control/store"
)

// apiHandler returns the real API server's handler over a real store.
func apiHandler(t *testing.T) http.Handler {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	api := apiserver.New(apiserver.Config{Store: st})
	if err := api.Init(ctx); err != nil {
		t.Fatal(err)
	}
	return api.Handler()
}

// serveAPI serves h on a loopback port with limits until the test ends.
func serveAPI(t *testing.T, h http.Handler, limits serve.Limits) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve.Run(ctx, ln, h, limits) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// TestSlowBodiesDoNotStarveTheAPI opens a thousand connections that each
// send a request's headers and a few bytes of its body and then hold (the
// slow-body attack), and shows that `skiff get pods` is still answered at
// once and that the server's read timeout closes every one of them.
func TestSlowBodiesDoNotStarveTheAPI(t *testing.T) {
	const conns = 1000
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if need := uint64(2*conns + 200); rl.Cur < need {
		t.Skipf("needs %d open files (both ends of %d connections); ulimit -n is %d", need, conns, rl.Cur)
	}
	api := apiHandler(t)
	var started, ended atomic.Int64
	counted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/skiff.v1.PodService/Create" {
			started.Add(1)
			defer ended.Add(1)
		}
		api.ServeHTTP(w, r)
	})
	limits := serve.DefaultLimits
	limits.Read = 5 * time.Second
	addr := serveAPI(t, counted, limits)

	pods := skiffv1connect.NewPodServiceClient(&http.Client{Timeout: 10 * time.Second}, "http://"+addr)
	p := &skiffv1.Pod{
		Metadata: &skiffv1.ObjectMeta{Name: "hello"},
		Spec:     &skiffv1.PodSpec{Containers: []*skiffv1.Container{{Name: "c", Image: "hello"}}},
	}
	if _, err := pods.Create(context.Background(), connect.NewRequest(p)); err != nil {
		t.Fatal(err)
	}
	started.Store(0)
	ended.Store(0)

	slow := make([]net.Conn, 0, conns)
	t.Cleanup(func() {
		for _, c := range slow {
			c.Close()
		}
	})
	opened := time.Now()
	req := "POST /skiff.v1.PodService/Create HTTP/1.1\r\nHost: " + addr +
		"\r\nContent-Type: application/proto\r\nContent-Length: 1000000\r\n\r\n\x0a\x05"
	for range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", len(slow), err)
		}
		slow = append(slow, c)
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, limits.Read, func() bool { return started.Load() >= conns }, func() string {
		return fmt.Sprintf("the server took up %d of %d slow requests within its read timeout", started.Load(), conns)
	})
	t.Logf("%d slow requests held after %v", conns, time.Since(opened).Round(time.Millisecond))

	// `skiff get pods`, as a user types it, with a one-second budget. The
	// API here has no authentication: the client config names the server
	// alone.
	config := filepath.Join(t.TempDir(), "client.config")
	if err := (clientConfig{Server: "http://" + addr}).save(config); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"--config", config, "get", "pods"})
	t0 := time.Now()
	err := root.ExecuteContext(ctx)
	took := time.Since(t0)
	if err != nil {
		t.Fatalf("skiff get pods with %d slow requests held: %v (%d of them had ended)", conns, err, ended.Load())
	}
	if n := ended.Load(); n > 0 {
		t.Fatalf("%d slow requests ended before the list did, so it did not run alongside all of them", n)
	}
	if !strings.Contains(out.String(), "hello") {
		t.Errorf("skiff get pods printed:\n%s", out.String())
	}
	t.Logf("skiff get pods answered in %v with %d slow requests held", took.Round(time.Microsecond), conns)

	// The read timeout ends them all: each gets an answer and its
	// connection is closed.
	answered := 0
	for i, c := range slow {
		_ = c.SetReadDeadline(opened.Add(limits.Read + 20*time.Second))
		data, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("slow connection %d was not closed by the server: %v", i, err)
		}
		if strings.HasPrefix(string(data), "HTTP/1.1 504 ") && strings.Contains(string(data), "deadline_exceeded") {
			answered++
		} else if i == 0 {
			t.Logf("first slow connection got %q", data)
		}
	}
	t.Logf("all %d slow connections closed %v after they were opened; %d answered 504 deadline_exceeded", conns, time.Since(opened).Round(time.Millisecond), answered)
	if answered != conns {
		t.Errorf("%d of %d slow requests were told their body timed out", answered, conns)
	}
}

// TestWatchOutlivesServerTimeouts shows that the read and write timeouts
// that bound unary calls do not end a watch, over HTTP/1.1 (Connect) and
// cleartext HTTP/2 (gRPC).
func TestWatchOutlivesServerTimeouts(t *testing.T) {
	limits := serve.Limits{ReadHeader: time.Second, Read: 200 * time.Millisecond, Write: 200 * time.Millisecond, Idle: time.Second, MaxHeaderBytes: 1 << 20}
	addr := serveAPI(t, apiHandler(t), limits)
	base := "http://" + addr
	h2 := new(http.Protocols)
	h2.SetUnencryptedHTTP2(true)
	h1t, h2t := &http.Transport{}, &http.Transport{Protocols: h2}
	t.Cleanup(func() {
		h1t.CloseIdleConnections()
		h2t.CloseIdleConnections()
	})
	clients := []struct {
		name string
		pods skiffv1connect.PodServiceClient
	}{
		{"connect over HTTP/1.1", skiffv1connect.NewPodServiceClient(&http.Client{Transport: h1t}, base)},
		{"grpc over h2c", skiffv1connect.NewPodServiceClient(&http.Client{Transport: h2t}, base, connect.WithGRPC())},
	}
	for i, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			// Create the pod only after the open watch has outlived the
			// server's read and write timeouts several times.
			name := fmt.Sprintf("late-%d", i)
			created := make(chan error, 1)
			go func() {
				time.Sleep(5 * limits.Write)
				p := &skiffv1.Pod{
					Metadata: &skiffv1.ObjectMeta{Name: name},
					Spec:     &skiffv1.PodSpec{Containers: []*skiffv1.Container{{Name: "c", Image: "hello"}}},
				}
				_, err := c.pods.Create(ctx, connect.NewRequest(p))
				created <- err
			}()
			st, err := c.pods.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if err := <-created; err != nil {
				t.Fatal(err)
			}
			if !st.Receive() {
				t.Fatalf("watch ended after %v: %v", 5*limits.Write, st.Err())
			}
			if ev := st.Msg(); ev.Type != skiffv1.EventType_EVENT_TYPE_ADDED || ev.Object.GetMetadata().GetName() != name {
				t.Errorf("event %v %v, want ADDED %s", ev.Type, ev.Object.GetMetadata().GetName(), name)
			}
		})
	}
}
