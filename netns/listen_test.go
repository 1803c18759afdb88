package netns

import (
	"errors"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestListenTCP: a socket made in a namespace accepts connections made in
// that namespace, and a port taken there is refused.
func TestListenTCP(t *testing.T) {
	needRoot(t)
	path := create(t, t.TempDir(), "listen")
	f, err := ListenTCP(path, 8080)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	if err := Do(path, func() error {
		c, err := net.DialTimeout("tcp", "127.0.0.1:8080", 5*time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		t.Fatalf("dial inside the namespace: %v", err)
	}
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
	if _, err := ListenTCP(path, 8080); !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("second listener on 8080 = %v; want EADDRINUSE", err)
	}
	if _, err := ListenTCP(path, 0); err == nil {
		t.Error("ListenTCP(port 0) succeeded; want an error")
	}
	assertThreadsAtHome(t)
}
