package agent

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// statsCRI is the fake CRI with container stats: each container uses CPU
// at its own rate on a clock the test moves, and the stats service's wait
// moves that clock instead of sleeping.
type statsCRI struct {
	*fakeCRI
	now   int64            // unix nanoseconds; under fakeCRI.mu
	rate  map[string]int64 // CPU use by container ID, nanocores; under fakeCRI.mu
	total map[string]uint64
	mem   map[string]uint64
	waits []time.Duration // what the service waited
}

func newStatsCRI() *statsCRI {
	return &statsCRI{
		fakeCRI: newFakeCRI(),
		now:     time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC).UnixNano(),
		rate:    map[string]int64{}, total: map[string]uint64{}, mem: map[string]uint64{},
	}
}

// run adds a running container of pod ns/pod (uid ns-pod) that uses
// nanoCores of CPU and mem bytes.
func (f *statsCRI) run(id, ns, pod, name string, nanoCores int64, mem uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers[id] = &runtimeapi.ContainerStatus{
		Id: id, Metadata: &runtimeapi.ContainerMetadata{Name: name}, State: runtimeapi.ContainerState_CONTAINER_RUNNING,
		Labels: map[string]string{LabelPodUID: ns + "-" + pod, LabelPodNamespace: ns, LabelPodName: pod, LabelContainerName: name},
	}
	f.sandboxOf[id] = "sb-" + ns + "-" + pod
	f.rate[id], f.mem[id] = nanoCores, mem
}

// advance moves the clock by d, each container using CPU at its rate.
func (f *statsCRI) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now += int64(d)
	for id, r := range f.rate {
		if f.containers[id].GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING {
			f.total[id] += uint64(r * int64(d) / int64(time.Second))
		}
	}
}

func (f *statsCRI) wait(_ context.Context, d time.Duration) error {
	f.mu.Lock()
	f.waits = append(f.waits, d)
	f.mu.Unlock()
	f.advance(d)
	return nil
}

func (f *statsCRI) waited() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waits)
}

// ListContainerStats reports every container, exited ones too, as the CRI
// server does, filtered by labels.
func (f *statsCRI) ListContainerStats(_ context.Context, r *runtimeapi.ListContainerStatsRequest, _ ...grpc.CallOption) (*runtimeapi.ListContainerStatsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*runtimeapi.ContainerStats
	for id, c := range f.containers {
		if !labelsMatch(c.Labels, r.GetFilter().GetLabelSelector()) {
			continue
		}
		out = append(out, &runtimeapi.ContainerStats{
			Attributes: &runtimeapi.ContainerAttributes{Id: id, Metadata: c.Metadata, Labels: c.Labels},
			Cpu:        &runtimeapi.CpuUsage{Timestamp: f.now, UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: f.total[id]}},
			Memory:     &runtimeapi.MemoryUsage{Timestamp: f.now, WorkingSetBytes: &runtimeapi.UInt64Value{Value: f.mem[id]}},
		})
	}
	return &runtimeapi.ListContainerStatsResponse{Stats: out}, nil
}

func labelsMatch(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func newTestStats(cri *statsCRI) *statsService {
	s := newStatsService(withDeadlines(cri, callTimeout), slog.New(slog.DiscardHandler))
	s.wait = cri.wait
	return s
}

// top calls PodStats and renders its answer as "ns/pod container cpu mem
// window" lines, CPU in millicores.
func top(t *testing.T, s *statsService, ns string, names ...string) []string {
	t.Helper()
	res, err := s.PodStats(context.Background(), connect.NewRequest(&skiffv1.PodStatsRequest{Namespace: ns, Names: names}))
	if err != nil {
		t.Fatalf("PodStats: %v", err)
	}
	var out []string
	for _, p := range res.Msg.GetPods() {
		for _, c := range p.GetContainers() {
			out = append(out, fmt.Sprintf("%s/%s %s cpu=%dm mem=%d window=%dms", p.Namespace, p.Name, c.Name, c.CpuNanoCores/1e6, c.MemoryBytes, p.WindowMillis))
		}
	}
	return out
}

func TestPodStatsRate(t *testing.T) {
	cri := newStatsCRI()
	cri.run("a1", "default", "web", "app", 250e6, 3<<20)
	cri.run("a0", "default", "web", "old", 900e6, 1<<20) // an earlier run, exited below
	cri.run("b1", "default", "db", "main", 1e9, 8<<20)
	cri.run("b2", "default", "db", "side", 0, 1<<20)
	cri.run("c1", "other", "job", "work", 100e6, 2<<20)
	cri.run("x1", "default", "alien", "x", 1e9, 1<<20)
	delete(cri.containers["x1"].Labels, LabelPodUID) // not started by this agent
	cri.exitContainer("a0", 0)
	s := newTestStats(cri)

	// The first call has no earlier sample: it samples, waits a
	// window, and measures the rate between.
	got := top(t, s, "default")
	want := []string{
		"default/db main cpu=1000m mem=8388608 window=1000ms",
		"default/db side cpu=0m mem=1048576 window=1000ms",
		"default/web app cpu=250m mem=3145728 window=1000ms",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("first call:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := cri.waited(); n != 1 || cri.waits[0] != time.Second {
		t.Fatalf("the first call waited %v, want one window of 1s", cri.waits)
	}

	// Half a second on, the web app doubles its use: the rate is
	// measured from the kept sample that is a window old (1.5 s of
	// CPU time delta over 1.5 s), with no wait.
	cri.mu.Lock()
	cri.rate["a1"] = 500e6
	cri.mu.Unlock()
	cri.advance(500 * time.Millisecond)
	got = top(t, s, "default", "web")
	want = []string{"default/web app cpu=333m mem=3145728 window=1500ms"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("second call:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := cri.waited(); n != 1 {
		t.Fatalf("the second call waited (%d waits): a kept sample was a window old", n)
	}

	// Every namespace, once the kept samples are too old to stand for
	// now: the call samples afresh, and the rate is today's.
	cri.advance(time.Minute)
	got = top(t, s, "")
	want = []string{
		"default/db main cpu=1000m mem=8388608 window=1000ms",
		"default/db side cpu=0m mem=1048576 window=1000ms",
		"default/web app cpu=500m mem=3145728 window=1000ms",
		"other/job work cpu=100m mem=2097152 window=1000ms",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("all namespaces, after a minute:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := cri.waited(); n != 2 {
		t.Fatalf("%d waits after a minute's pause, want 2: a sample a minute old stands for nothing", n)
	}

	// A pod of no running container is absent; so is a name not on the node.
	got = top(t, s, "default", "nosuch")
	if len(got) != 0 {
		t.Fatalf("pod nosuch: %v, want nothing", got)
	}
}

func TestPodStatsKeepsBoundedSamples(t *testing.T) {
	cri := newStatsCRI()
	for i := range 3 {
		cri.run(fmt.Sprintf("c%d", i), "default", fmt.Sprintf("p%d", i), "app", int64(i+1)*100e6, 1<<20)
	}
	s := newTestStats(cri)
	s.limit = 2

	// Three containers, room for two: all three are measured, the
	// third by waiting on each call.
	for call := range 3 {
		got := top(t, s, "")
		if len(got) != 3 {
			t.Fatalf("call %d: %v, want 3 containers", call, got)
		}
		if !strings.Contains(got[2], "default/p2 app cpu=300m") {
			t.Fatalf("call %d: %v, want p2 at 300m", call, got)
		}
		if n := len(s.samples); n > 2 {
			t.Fatalf("call %d: %d containers' samples kept, over the bound of 2", call, n)
		}
		cri.advance(time.Second)
	}
	if n := cri.waited(); n != 3 {
		t.Fatalf("%d waits, want 3: the container past the bound has no kept sample", n)
	}

	// A container that ends loses its samples: the room goes to another.
	cri.exitContainer("c0", 0)
	top(t, s, "")
	if _, ok := s.samples["c0"]; ok {
		t.Fatalf("the samples of exited container c0 are still kept: %v", s.samples)
	}
	top(t, s, "")
	if n := len(s.samples); n != 2 {
		t.Fatalf("%d containers' samples kept after c0 ended, want 2 (c1 and c2)", n)
	}
}
