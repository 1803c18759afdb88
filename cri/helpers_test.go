package cri

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/netns"
	skiffrt "skiff.dev/skiff/runtime"
	"skiff.dev/skiff/runtime/image"
	"skiff.dev/skiff/runtime/wasm"
	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

var (
	// helloPath is testdata/hello built for wasip1; empty if the build failed.
	helloPath string
	helloErr  error
	// serverPath is runtime/wasm's testdata/server (an HTTP server on its
	// declared ports) built for wasip1; empty if the build failed.
	serverPath string
	serverErr  error
	// cacheDir is the compilation cache the test runtimes share, so the
	// hello program (seconds to compile under -race) compiles once.
	cacheDir string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cri-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cacheDir = filepath.Join(dir, "wasm-cache")
	helloPath = filepath.Join(dir, "hello.wasm")
	helloErr = wasmtest.BuildGo("testdata/hello", helloPath)
	serverPath = filepath.Join(dir, "server.wasm")
	serverErr = wasmtest.BuildGo("../runtime/wasm/testdata/server", serverPath)
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func needHello(tb testing.TB) string {
	tb.Helper()
	if helloErr != nil {
		tb.Fatalf("build testdata/hello: %v", helloErr)
	}
	return helloPath
}

// testRuntimes are the runtimes of a Server under test: a Wasm runtime on
// the shared compilation cache, closed by the server or, if New fails, when
// the test ends.
func testRuntimes(tb testing.TB) map[string]skiffrt.Runtime {
	tb.Helper()
	rt, err := wasm.New(context.Background(), wasm.Config{CacheDir: cacheDir})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { rt.Close(context.Background()) })
	return map[string]skiffrt.Runtime{"wasm": rt.Neutral()}
}

func needServer(tb testing.TB) string {
	tb.Helper()
	if serverErr != nil {
		tb.Fatalf("build runtime/wasm/testdata/server: %v", serverErr)
	}
	return serverPath
}

// fakeNamespaces stands in for netns in tests that need no root. It
// records pins; failCreate makes Create fail. Listen listens on an
// ephemeral port of 127.0.0.1 and records it under the port asked for.
type fakeNamespaces struct {
	dir string

	mu         sync.Mutex
	pins       map[string]bool
	failCreate error
	listening  map[int]string // port asked for -> address
}

func newFakeNamespaces(dir string) *fakeNamespaces {
	return &fakeNamespaces{dir: dir, pins: map[string]bool{}, listening: map[int]string{}}
}

func (f *fakeNamespaces) Listen(_ string, port int) (*os.File, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	file, err := ln.(*net.TCPListener).File()
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.listening[port] = ln.Addr().String()
	f.mu.Unlock()
	return file, nil
}

func (f *fakeNamespaces) addr(port int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.listening[port]
}

func (f *fakeNamespaces) Create(id string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failCreate != nil {
		return "", f.failCreate
	}
	p := filepath.Join(f.dir, id)
	f.pins[p] = true
	return p, nil
}

func (f *fakeNamespaces) Delete(path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.pins, path)
	return nil
}

func (f *fakeNamespaces) IsPinned(path string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pins[path]
}

func (f *fakeNamespaces) List() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for p := range f.pins {
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}

func (f *fakeNamespaces) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pins)
}

// env is a CRI service on a unix socket with clients, on a temp root.
type env struct {
	t      testing.TB
	root   string
	logDir string
	images *image.Store
	ns     namespaces
	// network is the service's pod network; nil: netns.Loopback.
	network netns.Network
	// inline: no netns.CNIPool even with a CNI network (each sandbox's
	// namespace is attached in RunPodSandbox).
	inline bool
	// attached is the service's pool of attached namespaces; nil: none.
	attached *netns.CNIPool
	svc      *service
	wasm     *wasm.Runtime // the service's "wasm" runtime
	rs       runtime.RuntimeServiceClient
	is       runtime.ImageServiceClient
	stop     func()
}

// newEnv starts a service with fake namespaces (real ones if realNetns).
func newEnv(t testing.TB, realNetns bool) *env {
	t.Helper()
	root := t.TempDir()
	images, err := image.Open(filepath.Join(root, "images"))
	if err != nil {
		t.Fatal(err)
	}
	var ns namespaces = newFakeNamespaces(filepath.Join(root, "netns"))
	if realNetns {
		ns = hostNamespaces{dir: filepath.Join(root, "state", "netns")}
	}
	e := &env{t: t, root: root, logDir: filepath.Join(root, "logs"), images: images, ns: ns}
	e.open()
	t.Cleanup(func() { e.stop() })
	return e
}

func (e *env) open() {
	t := e.t
	t.Helper()
	rt, err := wasm.New(context.Background(), wasm.Config{CacheDir: cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.wasm = rt
	var network netns.Network = netns.Loopback{}
	if e.network != nil {
		network = e.network
	}
	var attached attachedNamespaces
	e.attached = nil
	if cni, ok := network.(*netns.CNI); ok && !e.inline {
		if e.attached, err = netns.NewCNIPool(e.ns.(hostNamespaces).dir, cni, namespacePoolSize, log); err != nil {
			t.Fatal(err)
		}
		attached = e.attached
	}
	pool := e.attached
	svc, err := newService(deps{
		log:        log,
		rootDir:    e.root,
		runtimes:   map[string]skiffrt.Runtime{"wasm": rt.Neutral()},
		images:     e.images,
		namespaces: e.ns,
		network:    network,
		attached:   attached,
	})
	if err != nil {
		if pool != nil {
			pool.Close()
		}
		t.Fatal(err)
	}
	sockDir, err := os.MkdirTemp("", "cri")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(sockDir, "cri.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := newGRPCServer(svc, log)
	served := make(chan struct{})
	go func() {
		g.Serve(l)
		close(served)
	}()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	e.rs = runtime.NewRuntimeServiceClient(conn)
	e.is = runtime.NewImageServiceClient(conn)
	stopped := false
	e.stop = func() {
		if stopped {
			return
		}
		stopped = true
		conn.Close()
		g.Stop()
		<-served
		if err := svc.close(context.Background()); err != nil {
			t.Error(err)
		}
		if pool != nil {
			if err := pool.Close(); err != nil {
				t.Error(err)
			}
		}
		os.RemoveAll(sockDir)
	}
}

// restart closes the service and opens a new one on the same root, as a
// process restart would.
func (e *env) restart() {
	e.stop()
	e.open()
}

// testWriter sends logs to t.Log, and nowhere once the test is over.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	defer func() { recover() }() // t.Log after the test ended panics
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func (e *env) importImage(name string, module []byte) image.Image {
	e.t.Helper()
	img, err := e.images.Import(context.Background(), name, bytes.NewReader(module))
	if err != nil {
		e.t.Fatal(err)
	}
	return img
}

func (e *env) importFile(name, path string) image.Image {
	e.t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.importImage(name, b)
}

func podConfig(name, logDir string) *runtime.PodSandboxConfig {
	return &runtime.PodSandboxConfig{
		Metadata:     &runtime.PodSandboxMetadata{Name: name, Namespace: "default", Uid: "uid-" + name},
		LogDirectory: logDir,
		Labels:       map[string]string{"app": name},
	}
}

func (e *env) runPod(name string) string {
	e.t.Helper()
	resp, err := e.rs.RunPodSandbox(context.Background(), &runtime.RunPodSandboxRequest{Config: podConfig(name, filepath.Join(e.logDir, name))})
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.PodSandboxId
}

func containerConfig(name, img string, args ...string) *runtime.ContainerConfig {
	return &runtime.ContainerConfig{
		Metadata: &runtime.ContainerMetadata{Name: name},
		Image:    &runtime.ImageSpec{Image: img},
		Args:     args,
		LogPath:  name + ".log",
		Labels:   map[string]string{"container": name},
	}
}

func (e *env) create(pod string, cfg *runtime.ContainerConfig) (string, error) {
	resp, err := e.rs.CreateContainer(context.Background(), &runtime.CreateContainerRequest{PodSandboxId: pod, Config: cfg})
	if err != nil {
		return "", err
	}
	return resp.ContainerId, nil
}

func (e *env) mustCreate(pod string, cfg *runtime.ContainerConfig) string {
	e.t.Helper()
	id, err := e.create(pod, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *env) start(id string) {
	e.t.Helper()
	if _, err := e.rs.StartContainer(context.Background(), &runtime.StartContainerRequest{ContainerId: id}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) status(id string) *runtime.ContainerStatus {
	e.t.Helper()
	resp, err := e.rs.ContainerStatus(context.Background(), &runtime.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.Status
}

// waitState polls a container until it reaches state.
func (e *env) waitState(id string, state runtime.ContainerState) *runtime.ContainerStatus {
	e.t.Helper()
	var st *runtime.ContainerStatus
	wasmtest.Eventually(e.t, 10*time.Second, func() bool { st = e.status(id); return st.State == state },
		func() string { return fmt.Sprintf("container %s is %v, want %v", id, st.State, state) })
	return st
}

// waitLog waits until the log of container id holds line, and returns the
// log's path.
func (e *env) waitLog(id, line string) string {
	e.t.Helper()
	path := e.status(id).LogPath
	var b []byte
	wasmtest.Eventually(e.t, 10*time.Second, func() bool {
		var err error
		if b, err = os.ReadFile(path); err != nil {
			e.t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasSuffix(l, " "+line) {
				return true
			}
		}
		return false
	}, func() string { return fmt.Sprintf("log of %s is %q, want a line %q", id, b, line) })
	return path
}

// wantCode checks that err is a gRPC error with code and a message
// containing each of parts.
func wantCode(t *testing.T, err error, code codes.Code, parts ...string) {
	t.Helper()
	st, _ := status.FromError(err)
	if err == nil || st.Code() != code {
		t.Fatalf("error = %v, want code %v", err, code)
	}
	for _, p := range parts {
		if !strings.Contains(st.Message(), p) {
			t.Errorf("error message %q does not contain %q", st.Message(), p)
		}
	}
}
