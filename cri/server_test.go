package cri

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/runtime/image"
	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

func newTestServer(t *testing.T, sock string) *Server {
	t.Helper()
	root := t.TempDir()
	images, err := image.Open(filepath.Join(root, "images"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(context.Background(), Config{Socket: sock, RootDir: filepath.Join(root, "node"), StateDir: filepath.Join(root, "run"), Images: images, Runtimes: testRuntimes(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func TestServe(t *testing.T) {
	dir, err := os.MkdirTemp("", "cri-serve")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "sub", "cri.sock")

	// A stale socket from a dead server is replaced.
	os.MkdirAll(filepath.Dir(sock), 0o755)
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	s := newTestServer(t, sock)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()

	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var v *runtime.VersionResponse
	wasmtest.Eventually(t, 5*time.Second, func() bool {
		v, err = runtime.NewRuntimeServiceClient(conn).Version(ctx, &runtime.VersionRequest{})
		return err == nil
	}, func() string { return fmt.Sprintf("Version over the socket: %v", err) })
	if err != nil || v.RuntimeName != "skiff" {
		t.Fatalf("Version over the socket = %v, %v", v, err)
	}
	info, err := os.Stat(sock)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, %v; want 0600", info.Mode().Perm(), err)
	}

	// A second server refuses a socket in use.
	other := newTestServer(t, sock)
	if err := other.Serve(context.Background()); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Serve on a live socket = %v", err)
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket still there after Serve: %v", err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Error(err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestServeRefusesNonSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "cri.sock")
	os.WriteFile(sock, []byte("precious"), 0o644)
	s := newTestServer(t, sock)
	if err := s.Serve(context.Background()); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Serve over a regular file = %v", err)
	}
	if b, _ := os.ReadFile(sock); string(b) != "precious" {
		t.Error("Serve clobbered a regular file")
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := New(context.Background(), Config{RootDir: t.TempDir(), Runtimes: testRuntimes(t)}); err == nil || !strings.Contains(err.Error(), "Images is required") {
		t.Errorf("New without Images = %v", err)
	}
	images, _ := image.Open(t.TempDir())
	if _, err := New(context.Background(), Config{Images: images, Runtimes: testRuntimes(t)}); err == nil || !strings.Contains(err.Error(), "RootDir is required") {
		t.Errorf("New without RootDir = %v", err)
	}
	if _, err := New(context.Background(), Config{RootDir: t.TempDir(), Images: images}); err == nil || !strings.Contains(err.Error(), "Config.Runtimes is empty") {
		t.Errorf("New without runtimes = %v", err)
	}
	// The state database is locked by the first server.
	root := t.TempDir()
	a, err := New(context.Background(), Config{RootDir: root, Images: images, StateDir: t.TempDir(), Runtimes: testRuntimes(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(context.Background())
	if _, err := New(context.Background(), Config{RootDir: root, Images: images, StateDir: t.TempDir(), Runtimes: testRuntimes(t)}); err == nil || !strings.Contains(err.Error(), "another skiff agent") {
		t.Errorf("second New on one RootDir = %v", err)
	}
	// The state dir is locked too, before anything in it is cleaned up:
	// what a running node keeps there stays.
	state := t.TempDir()
	b, err := New(context.Background(), Config{RootDir: t.TempDir(), Images: images, StateDir: state, Runtimes: testRuntimes(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	kept := filepath.Join(state, "netns", "running-pod")
	if err := os.MkdirAll(filepath.Dir(kept), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kept, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = New(context.Background(), Config{RootDir: t.TempDir(), Images: images, StateDir: state, Runtimes: testRuntimes(t)})
	if err == nil || !strings.Contains(err.Error(), "is in use by process "+strconv.Itoa(os.Getpid())) {
		t.Errorf("second New on one StateDir = %v, want it refused naming the holder", err)
	}
	if _, err := os.Stat(kept); err != nil {
		t.Errorf("the running node's pin after a second New: %v", err)
	}
	b.Close(context.Background())
	c, err := New(context.Background(), Config{RootDir: t.TempDir(), Images: images, StateDir: state, Runtimes: testRuntimes(t)})
	if err != nil {
		t.Errorf("New once the first closed: %v", err)
	} else {
		c.Close(context.Background())
	}
}
