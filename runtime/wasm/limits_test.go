package wasm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

// vmRSS returns the test process's resident set size, in bytes.
func vmRSS(t *testing.T) uint64 {
	t.Helper()
	n, err := wasmtest.RSS()
	if err != nil {
		t.Skipf("cannot read the resident set size: %v", err)
	}
	return n
}

// startNeighbour starts a Go guest that prints "tick" every 5ms until stopped.
func startNeighbour(t *testing.T, r *Runtime) (*Container, *syncBuffer) {
	t.Helper()
	var out syncBuffer
	c, err := r.Create(context.Background(), ContainerSpec{ID: "neighbour", ImageID: "guest", ImagePath: guestPath, Args: []string{"g", "graceful", "5ms"}, Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop(context.Background(), 0) })
	waitOutput(t, &out, "tick\n")
	return c, &out
}

// keepProbing probes the server at addr every 10ms, as a kubelet's probe
// would (see probe), until the returned function is called;
// that function reports how many probes passed and the first failure.
func keepProbing(addr string) func() (int, error) {
	stop := make(chan struct{})
	type result struct {
		passed int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				done <- r
				return
			case <-tick.C:
			}
			if got, err := probe(addr, "/"); err != nil || got != "ok 8080\n" {
				if r.err == nil {
					r.err = fmt.Errorf("probe = %q, %v", got, err)
				}
				continue
			}
			r.passed++
		}
	}()
	return func() (int, error) {
		close(stop)
		r := <-done
		return r.passed, r.err
	}
}

// checkProbes stops the prober and requires every probe to have passed.
func checkProbes(t *testing.T, stop func() (int, error)) {
	t.Helper()
	passed, err := stop()
	t.Logf("the serving neighbour answered %d probes meanwhile", passed)
	if err != nil || passed == 0 {
		t.Errorf("the serving neighbour stopped answering its probe: %d passed, first failure: %v", passed, err)
	}
}

// TestMemoryLimit runs a memory.grow bomb under a 64 MiB limit next to a
// neighbour: the bomb ends OOMKilled with a message naming the limit, the
// process's resident memory never grows past the limit plus 100 MiB, and
// the neighbour ticks on throughout.
func TestMemoryLimit(t *testing.T) {
	r := newRuntime(t, Config{})
	neighbour, ticks := startNeighbour(t, r)
	_, addr, _ := startServer(t, r, "server")
	const limit = 64 << 20
	before := vmRSS(t)
	c, err := r.Create(context.Background(), ContainerSpec{ID: "bomb", ImagePath: writeModule(t, wasmtest.Build(wasmtest.GrowBomb())), Args: []string{"m"}, MemoryLimit: limit})
	if err != nil {
		t.Fatal(err)
	}
	ticksBefore := strings.Count(ticks.String(), "tick")
	stopProbing := keepProbing(addr)
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	peak := before
	for done := false; !done; {
		select {
		case <-c.Done():
			done = true
		case <-time.After(time.Millisecond):
		}
		peak = max(peak, vmRSS(t))
	}
	checkProbes(t, stopProbing)
	st := c.Status()
	t.Logf("RSS before %d MiB, peak %d MiB; status %+v", before>>20, peak>>20, st)
	if st.ExitCode != 137 || st.Reason != ReasonOOMKilled || !strings.Contains(st.Message, "memory limit of 64Mi") {
		t.Errorf("status = %+v; want exit 137, reason OOMKilled, a message naming the 64Mi limit", st)
	}
	if peak > before+limit+100<<20 {
		t.Errorf("resident memory peaked at %d MiB, %d MiB more than before the bomb (limit 64 MiB + 100 MiB)", peak>>20, (peak-before)>>20)
	}
	if s := c.Stats(); s.MemoryBytes != 0 {
		t.Errorf("memory after exit = %d bytes, want 0 (released)", s.MemoryBytes)
	}
	wasmtest.Eventually(t, 10*time.Second, func() bool { return strings.Count(ticks.String(), "tick") > ticksBefore+2 }, func() string { return "timed out waiting until the neighbour ticks after the bomb" })
	if st := neighbour.Status(); st.State != StateRunning {
		t.Errorf("neighbour = %+v", st)
	}
}

// TestMemoryReleased checks that a container's linear memory counts in its
// stats while it runs and goes back to the system when it ends.
func TestMemoryReleased(t *testing.T) {
	r := newRuntime(t, Config{})
	const pages = 1600 // 100 MiB
	c, err := r.Create(context.Background(), ContainerSpec{ID: "big", ImagePath: writeModule(t, wasmtest.Build(wasmtest.Grow(pages), wasmtest.Write(1, "grown\n"), wasmtest.Sleep(time.Hour))), Args: []string{"m"}})
	if err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	c.spec.Stdout = &out
	before := vmRSS(t)
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, &out, "grown\n")
	grown := vmRSS(t)
	if s := c.Stats(); s.MemoryBytes < pages<<16 {
		t.Errorf("memory while running = %d bytes, want at least %d", s.MemoryBytes, pages<<16)
	}
	if err := c.Stop(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	after := vmRSS(t)
	t.Logf("RSS before %d MiB, grown %d MiB, after stop %d MiB", before>>20, grown>>20, after>>20)
	if grown < before+80<<20 {
		t.Fatalf("RSS grew by %d MiB only, with 100 MiB of linear memory written", (grown-before)>>20)
	}
	if after > grown-80<<20 {
		t.Errorf("RSS after the container ended = %d MiB, %d MiB at its peak: its memory was not released", after>>20, grown>>20)
	}
}

// TestCPUBudget runs an infinite loop with a 1s CPU budget next to a
// neighbour: the loop is killed with reason CPUBudgetExceeded after about
// 1s of CPU time, no goroutine is left behind, and the neighbour ticks on.
func TestCPUBudget(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t, goleak.IgnoreCurrent()) })
	r := newRuntime(t, Config{})
	neighbour, ticks := startNeighbour(t, r)
	_, addr, _ := startServer(t, r, "server")
	c, err := r.Create(context.Background(), ContainerSpec{ID: "loop", ImagePath: writeModule(t, wasmtest.Build(wasmtest.Spin())), Args: []string{"m"}, CPUBudget: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ticksBefore := strings.Count(ticks.String(), "tick")
	stopProbing := keepProbing(addr)
	st := waitDone(t, c)
	checkProbes(t, stopProbing)
	ticksDuring := strings.Count(ticks.String(), "tick") - ticksBefore
	cpu := c.Stats().CPUTime
	t.Logf("status %+v after %v, %v of CPU; the neighbour ticked %d times meanwhile", st, st.FinishedAt.Sub(st.StartedAt), cpu, ticksDuring)
	if st.ExitCode != 137 || st.Reason != ReasonCPUBudgetExceeded || !strings.Contains(st.Message, "CPU budget of 1s used up") {
		t.Errorf("status = %+v; want exit 137, reason CPUBudgetExceeded, a message naming the 1s budget", st)
	}
	if cpu < time.Second || cpu > 2*time.Second {
		t.Errorf("CPU time = %v, want about 1s", cpu)
	}
	if ticksDuring < 10 {
		t.Errorf("the neighbour ticked %d times in a second of the loop", ticksDuring)
	}
	if st := neighbour.Status(); st.State != StateRunning {
		t.Errorf("neighbour = %+v", st)
	}
}

// TestStats checks that a running container's CPU time and memory are
// non-zero and its CPU time grows.
func TestStats(t *testing.T) {
	r := newRuntime(t, Config{})
	c, err := r.Create(context.Background(), ContainerSpec{ID: "spin", ImagePath: writeModule(t, wasmtest.Build(wasmtest.Spin())), Args: []string{"m"}})
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.CPUTime != 0 || s.MemoryBytes != 0 {
		t.Errorf("stats before start = %+v", s)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Stop(context.Background(), 0)
	first := c.Stats()
	if first.MemoryBytes != 64<<10 || first.Timestamp.IsZero() {
		t.Errorf("stats = %+v; want one page of memory and a timestamp", first)
	}
	wasmtest.Eventually(t, 10*time.Second, func() bool { return c.Stats().CPUTime > first.CPUTime+10*time.Millisecond }, func() string { return "timed out waiting until CPU time grows" })
	if err := c.Stop(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	end := c.Stats()
	if end.CPUTime < first.CPUTime+10*time.Millisecond || end.MemoryBytes != 0 {
		t.Errorf("stats after exit = %+v; want the CPU time kept, memory 0", end)
	}
}

// TestModuleCacheBound fills a small compiled-module cache: idle modules
// are evicted least recently used first, and a module in use is kept.
func TestModuleCacheBound(t *testing.T) {
	module := func(i int) string {
		return writeModule(t, wasmtest.Build(wasmtest.Write(1, fmt.Sprintf("module %d", i))))
	}
	size := int64(len(wasmtest.Build(wasmtest.Write(1, "module 0")))) * compiledSizeFactor
	r := newRuntime(t, Config{ModuleCacheBytes: 2 * size})
	keys := func() []string {
		r.mu.Lock()
		defer r.mu.Unlock()
		var ks []string
		for e := r.modules.idle.Front(); e != nil; e = e.Next() {
			ks = append(ks, e.Value.(*moduleEntry).key)
		}
		return ks
	}
	run := func(key, path string) {
		c, err := r.Create(context.Background(), ContainerSpec{ID: key, ImageID: key, ImagePath: path, Args: []string{"m"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		waitDone(t, c)
	}
	// A running container pins its module past the bound.
	pinned, err := r.Create(context.Background(), ContainerSpec{ID: "pinned", ImageID: "pinned", ImagePath: writeModule(t, wasmtest.Build(wasmtest.Spin())), Args: []string{"m"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := pinned.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	paths := []string{module(0), module(1), module(2)}
	run("m0", paths[0])
	run("m1", paths[1])
	if got := keys(); strings.Join(got, ",") != "m1" {
		t.Errorf("idle modules = %v, want [m1] (m0 evicted: the pinned module and m1 fill the cache)", got)
	}
	if err := pinned.Stop(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	run("m2", paths[2])
	run("m1", paths[1]) // used again: most recent
	if got := keys(); strings.Join(got, ",") != "m1,m2" {
		t.Errorf("idle modules = %v, want [m1 m2]", got)
	}
	r.mu.Lock()
	_, m0 := r.modules.entries["m0"]
	total := r.modules.size
	r.mu.Unlock()
	if m0 || total > 2*size {
		t.Errorf("cache holds m0 %v, %d bytes (bound %d)", m0, total, 2*size)
	}
}

// TestCPULimit: a spinning module limited to 20ms of CPU per 100ms uses
// about a fifth of a core, and its cgroup goes with it.
func TestCPULimit(t *testing.T) {
	r := newRuntime(t, Config{})
	if err := r.CPULimits(); err != nil {
		t.Skip(err)
	}
	c, err := r.Create(context.Background(), ContainerSpec{ID: "limited", ImagePath: writeModule(t, wasmtest.Build(wasmtest.Spin())), Args: []string{"m"}, CPUQuota: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	cgroup := filepath.Join(r.cpu.root, "limited")
	if _, err := os.Stat(cgroup); err != nil {
		t.Errorf("the container's cgroup: %v", err)
	}
	start, before := time.Now(), c.Stats().CPUTime
	time.Sleep(time.Second) // a window to measure, not a wait for a condition
	used, wall := c.Stats().CPUTime-before, time.Since(start)
	if err := c.Stop(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	share := float64(used) / float64(wall)
	t.Logf("used %v of CPU in %v: %.2f of a core", used, wall, share)
	// Above the quota is the failure; below it only means a loaded
	// machine gave the thread less than it was allowed.
	if share == 0 || share > 0.35 {
		t.Errorf("the limited module used %.2f of a core, want at most about 0.2", share)
	}
	if _, err := os.Stat(cgroup); !os.IsNotExist(err) {
		t.Errorf("the container's cgroup is still there after it exited: %v", err)
	}
}
