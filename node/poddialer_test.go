package node

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"skiff.dev/skiff/netns"
)

// TestPodDialerReachesIntoNamespace: the probes' dialer reaches a listener
// inside a pod's network namespace, over TCP and HTTP, and a dial into
// another namespace, where nothing listens, is refused. All traffic stays
// on the loopback interfaces of namespaces the test makes.
func TestPodDialerReachesIntoNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	dir := t.TempDir()
	pod, err := netns.Create(dir, "pod")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Delete(pod) })
	other, err := netns.Create(dir, "other")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Delete(other) })

	var l net.Listener
	if err := netns.Do(pod, func() (err error) {
		l, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "inside") })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	addr := l.Addr().String()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := podDialer{}.DialContext(ctx, pod, "tcp", addr)
	if err != nil {
		t.Fatalf("TCP dial into the pod's namespace: %v", err)
	}
	c.Close()

	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			return podDialer{}.DialContext(ctx, pod, network, a)
		},
		DisableKeepAlives: true,
	}}
	resp, err := client.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("HTTP GET into the pod's namespace: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "inside" {
		t.Errorf("answer %d %q, want 200 inside", resp.StatusCode, body)
	}

	if c, err := (podDialer{}).DialContext(ctx, other, "tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Errorf("dial into a namespace where nothing listens: %v, want connection refused", err)
	}
}
