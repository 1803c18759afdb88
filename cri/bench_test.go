package cri

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/netns"
	"skiff.dev/skiff/runtime/image"
	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

// BenchmarkWasmPodStart measures what a pod start costs a CRI client over
// the socket: RunPodSandbox (network namespace included) + CreateContainer
// (compile, or compiled-module cache hit) + StartContainer (instantiate,
// _start running). Teardown is not timed.
//
//	first:  every iteration uses a module never seen (the hello program
//	        with a distinct custom section), so it is compiled from scratch.
//	cached: the module is already compiled.
func BenchmarkWasmPodStart(b *testing.B) {
	needRoot(b)
	hello, err := os.ReadFile(needHello(b))
	if err != nil {
		b.Fatal(err)
	}
	tmp := b.TempDir()
	images, err := image.Open(filepath.Join(tmp, "images"))
	if err != nil {
		b.Fatal(err)
	}
	stateDir := filepath.Join(tmp, "run")
	b.Cleanup(func() {
		pins, _ := netns.List(filepath.Join(stateDir, "netns"))
		for _, p := range pins {
			netns.Delete(p)
		}
	})
	sockDir, err := os.MkdirTemp("", "crib")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "cri.sock")
	srv, err := New(context.Background(), Config{Socket: sock, RootDir: filepath.Join(tmp, "node"), StateDir: stateDir, Images: images, Runtimes: testRuntimes(b)})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	b.Cleanup(func() {
		cancel()
		<-served
		srv.Close(context.Background())
	})
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	rs := runtime.NewRuntimeServiceClient(conn)
	var verr error
	wasmtest.Eventually(b, 5*time.Second, func() bool { _, verr = rs.Version(ctx, &runtime.VersionRequest{}); return verr == nil },
		func() string { return fmt.Sprintf("the CRI server does not answer: %v", verr) })

	pods := 0
	var phases [3][]time.Duration // RunPodSandbox, CreateContainer, StartContainer
	podStart := func(b *testing.B, img string) string {
		pods++
		name := fmt.Sprintf("bench-%d", pods)
		t0 := time.Now()
		pod, err := rs.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: podConfig(name, filepath.Join(tmp, "logs"))})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		cfg := containerConfig("hello", img, "sleep", "1h")
		cfg.LogPath = name + ".log"
		ctr, err := rs.CreateContainer(ctx, &runtime.CreateContainerRequest{PodSandboxId: pod.PodSandboxId, Config: cfg})
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if _, err := rs.StartContainer(ctx, &runtime.StartContainerRequest{ContainerId: ctr.ContainerId}); err != nil {
			b.Fatal(err)
		}
		for i, d := range []time.Duration{t1.Sub(t0), t2.Sub(t1), time.Since(t2)} {
			phases[i] = append(phases[i], d)
		}
		return pod.PodSandboxId
	}
	remove := func(b *testing.B, pod string) {
		if _, err := rs.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
			b.Fatal(err)
		}
	}

	b.Run("first", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			b.StopTimer()
			name := fmt.Sprintf("hello-first-%d", pods)
			if _, err := images.Import(ctx, name, bytes.NewReader(wasmtest.WithCustomSection(hello, name))); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			pod := podStart(b, name)
			b.StopTimer()
			remove(b, pod)
			b.StartTimer()
		}
	})
	b.Run("cached", func(b *testing.B) {
		if _, err := images.Import(ctx, "hello", bytes.NewReader(hello)); err != nil {
			b.Fatal(err)
		}
		remove(b, podStart(b, "hello")) // compile once, untimed
		phases = [3][]time.Duration{}
		var took []time.Duration
		b.ResetTimer()
		for b.Loop() {
			start := time.Now()
			pod := podStart(b, "hello")
			took = append(took, time.Since(start))
			b.StopTimer()
			remove(b, pod)
			b.StartTimer()
		}
		b.ReportMetric(p50ms(took), "p50-ms")
		b.ReportMetric(p50ms(phases[0]), "sandbox-p50-ms")
		b.ReportMetric(p50ms(phases[1]), "create-p50-ms")
		b.ReportMetric(p50ms(phases[2]), "start-p50-ms")
	})
}

// p50ms is the median of ds, in milliseconds.
func p50ms(ds []time.Duration) float64 {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return float64(ds[len(ds)/2].Microseconds()) / 1000
}

// BenchmarkStopContainer measures StopContainer with a timeout, from the
// call to its return (the container has then exited), over the socket:
//
//	cooperative: the module returns when its stdin ends (timeout 30s).
//	ignoring-2s: the module sleeps on; it is killed when the 2s timeout ends.
//	timeout-0:   the module would return when asked, but is killed at once.
//
// Creating and starting the container, and waiting for its greeting, are
// not timed.
func BenchmarkStopContainer(b *testing.B) {
	e := newEnv(b, false)
	e.importFile("hello", needHello(b))
	pod := e.runPod("p")
	n := 0
	run := func(b *testing.B, timeout int64, args ...string) {
		for b.Loop() {
			b.StopTimer()
			n++
			name := fmt.Sprint("c", n)
			id := e.mustCreate(pod, containerConfig(name, "hello", args...))
			e.start(id)
			e.waitLog(id, "stdout F Hello from "+name+"!")
			b.StartTimer()
			if _, err := e.rs.StopContainer(context.Background(), &runtime.StopContainerRequest{ContainerId: id, Timeout: timeout}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if _, err := e.rs.RemoveContainer(context.Background(), &runtime.RemoveContainerRequest{ContainerId: id}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	}
	b.Run("cooperative", func(b *testing.B) { run(b, 30, "wait-stdin", "terminating") })
	b.Run("ignoring-2s", func(b *testing.B) { run(b, 2, "sleep", "1h") })
	b.Run("timeout-0", func(b *testing.B) { run(b, 0, "wait-stdin", "terminating") })
}
