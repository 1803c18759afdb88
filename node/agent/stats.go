package agent

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// Bounds of the stats service.
const (
	// statsWindow is the shortest span a CPU rate is measured over: a
	// container with no sample that old makes the call sample again after
	// it, as the kubelet's cAdvisor needs two housekeeping samples.
	statsWindow = time.Second
	// maxSampleAge is the oldest kept sample a rate is measured from; an
	// older one would average over a long past, so the call samples afresh.
	maxSampleAge = 30 * time.Second
	// maxStatsSamples bounds the containers whose samples are kept; one
	// beyond it is sampled twice on each call instead.
	maxStatsSamples = 10000
	// maxStatsCalls bounds the PodStats calls served at once.
	maxStatsCalls = 8
)

// cpuSample is a container's CPU time at a moment, both as the runtime
// reports them.
type cpuSample struct {
	at    int64  // unix nanoseconds
	total uint64 // CPU time used since the start, nanoseconds
}

// kept are a container's kept samples: the newest, and the one before it
// that was at least statsWindow older (zero when none).
type kept struct {
	older, newer cpuSample
}

// base picks the newest kept sample that is between statsWindow and
// maxSampleAge older than s, to measure a rate from.
func (k *kept) base(s cpuSample) (cpuSample, bool) {
	for _, b := range []cpuSample{k.newer, k.older} {
		if age := time.Duration(s.at - b.at); b.at != 0 && age >= statsWindow && age <= maxSampleAge && s.total >= b.total {
			return b, true
		}
	}
	return cpuSample{}, false
}

// add keeps s as the newest sample once the newest is statsWindow old.
func (k *kept) add(s cpuSample) {
	if time.Duration(s.at-k.newer.at) >= statsWindow {
		k.older, k.newer = k.newer, s
	}
}

// statsService serves PodStats from the CRI server's container stats
// (ListContainerStats: the working set is a Wasm container's linear
// memory, the CPU time its guest thread's). A CPU rate needs two samples:
// it keeps each running container's recent ones, and the first call that
// sees a container waits statsWindow for a second.
type statsService struct {
	rt  runtimeapi.RuntimeServiceClient
	log *slog.Logger
	// wait returns after d, or with ctx's error when it ends first.
	wait  func(ctx context.Context, d time.Duration) error
	limit int           // maxStatsSamples; smaller in tests
	seats chan struct{} // one per call in progress

	mu      sync.Mutex
	samples map[string]*kept // by container ID; guarded by mu
}

func newStatsService(rt runtimeapi.RuntimeServiceClient, log *slog.Logger) *statsService {
	return &statsService{
		rt: rt, log: log, wait: waitTimer, limit: maxStatsSamples,
		seats: make(chan struct{}, maxStatsCalls), samples: map[string]*kept{},
	}
}

func waitTimer(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runningContainer is a running container of a pod this agent runs.
type runningContainer struct {
	ns, pod, uid, name string
}

// containerStat is one container's stats at a moment.
type containerStat struct {
	cpu    cpuSample
	memory uint64
}

// PodStats returns the CPU and memory use of the node's running pods in
// the namespace (every one when empty), only those named when names are
// given, each with its running containers. A pod with none running is
// absent.
func (s *statsService) PodStats(ctx context.Context, req *connect.Request[skiffv1.PodStatsRequest]) (*connect.Response[skiffv1.PodStatsResponse], error) {
	if s.rt == nil {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("this node has no container runtime"))
	}
	select {
	case s.seats <- struct{}{}:
		defer func() { <-s.seats }()
	default:
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("this node serves %d stats calls at once already; try again later", cap(s.seats)))
	}
	ns, names := req.Msg.GetNamespace(), req.Msg.GetNames()
	running, err := s.running(ctx)
	if err != nil {
		return nil, err
	}
	s.forget(running)
	for id, c := range running {
		if ns != "" && c.ns != ns || len(names) > 0 && !slices.Contains(names, c.pod) {
			delete(running, id)
		}
	}
	if len(running) == 0 {
		return connect.NewResponse(&skiffv1.PodStatsResponse{}), nil
	}
	first, err := s.sample(ctx, ns, running)
	if err != nil {
		return nil, err
	}
	// Each container's rate is from a kept sample when one is old
	// enough, else from first to a second sample a window later.
	bases := s.observe(first)
	cur := first
	if len(bases) < len(first) {
		if err := s.wait(ctx, statsWindow); err != nil {
			return nil, connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("wait for a second stats sample: %w", err))
		}
		if cur, err = s.sample(ctx, ns, running); err != nil {
			return nil, err
		}
		for id := range cur {
			if _, ok := bases[id]; !ok {
				if f, ok := first[id]; ok && cur[id].cpu.total >= f.cpu.total && cur[id].cpu.at > f.cpu.at {
					bases[id] = f.cpu
				}
			}
		}
		s.observe(cur)
	}
	return connect.NewResponse(&skiffv1.PodStatsResponse{Pods: podMetrics(running, cur, bases)}), nil
}

// running lists the node's running containers of pods this agent runs
// (those with its labels), by ID.
func (s *statsService) running(ctx context.Context) (map[string]runningContainer, error) {
	ctx, cancel := context.WithTimeout(ctx, criCallTimeout)
	defer cancel()
	res, err := s.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
	}})
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("list the node's containers: %w", err))
	}
	out := map[string]runningContainer{}
	for _, c := range res.GetContainers() {
		l := c.GetLabels()
		uid, ours := l[LabelPodUID]
		if !ours || c.GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
			continue
		}
		name := l[LabelContainerName]
		if name == "" {
			name = c.GetMetadata().GetName()
		}
		out[c.GetId()] = runningContainer{ns: l[LabelPodNamespace], pod: l[LabelPodName], uid: uid, name: name}
	}
	return out, nil
}

// sample reads the stats of the containers of running, in namespace ns
// when not empty.
func (s *statsService) sample(ctx context.Context, ns string, running map[string]runningContainer) (map[string]containerStat, error) {
	ctx, cancel := context.WithTimeout(ctx, criCallTimeout)
	defer cancel()
	f := &runtimeapi.ContainerStatsFilter{}
	if ns != "" {
		f.LabelSelector = map[string]string{LabelPodNamespace: ns}
	}
	res, err := s.rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{Filter: f})
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("read the node's container stats: %w", err))
	}
	out := make(map[string]containerStat, len(running))
	for _, st := range res.GetStats() {
		id := st.GetAttributes().GetId()
		if _, ok := running[id]; !ok {
			continue
		}
		at := st.GetCpu().GetTimestamp()
		if at == 0 {
			at = st.GetMemory().GetTimestamp()
		}
		out[id] = containerStat{
			cpu:    cpuSample{at: at, total: st.GetCpu().GetUsageCoreNanoSeconds().GetValue()},
			memory: st.GetMemory().GetWorkingSetBytes().GetValue(),
		}
	}
	return out, nil
}

// observe returns, for each sample, the kept sample to measure its rate
// from when there is one, and keeps the samples (at most s.limit
// containers).
func (s *statsService) observe(stats map[string]containerStat) map[string]cpuSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	bases := map[string]cpuSample{}
	for id, st := range stats {
		k, ok := s.samples[id]
		if !ok {
			if len(s.samples) >= s.limit {
				continue
			}
			k = &kept{newer: st.cpu}
			s.samples[id] = k
			continue
		}
		if b, ok := k.base(st.cpu); ok {
			bases[id] = b
		}
		k.add(st.cpu)
	}
	return bases
}

// forget drops the samples of containers no longer running.
func (s *statsService) forget(running map[string]runningContainer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.samples {
		if _, ok := running[id]; !ok {
			delete(s.samples, id)
		}
	}
}

// podMetrics groups the containers' stats by pod, in namespace and name
// order; a container without a rate (it started or vanished between the
// samples) is left out, and a pod without any.
func podMetrics(running map[string]runningContainer, cur map[string]containerStat, bases map[string]cpuSample) []*skiffv1.PodMetrics {
	byUID := map[string]*skiffv1.PodMetrics{}
	newest := map[string]int64{}
	for id, st := range cur {
		b, ok := bases[id]
		if !ok {
			continue
		}
		c := running[id]
		p := byUID[c.uid]
		if p == nil {
			p = &skiffv1.PodMetrics{Namespace: c.ns, Name: c.pod, Uid: c.uid}
			byUID[c.uid] = p
		}
		window := st.cpu.at - b.at
		p.WindowMillis = max(p.WindowMillis, window/int64(time.Millisecond))
		newest[c.uid] = max(newest[c.uid], st.cpu.at)
		p.Containers = append(p.Containers, &skiffv1.ContainerMetrics{
			Name:          c.name,
			CpuNanoCores:  nanoCores(st.cpu.total-b.total, window),
			MemoryBytes:   int64(min(st.memory, 1<<62)),
			CpuTotalNanos: int64(min(st.cpu.total, 1<<62)),
		})
	}
	out := make([]*skiffv1.PodMetrics, 0, len(byUID))
	for uid, p := range byUID {
		p.Timestamp = timestamppb.New(time.Unix(0, newest[uid]))
		slices.SortFunc(p.Containers, func(a, b *skiffv1.ContainerMetrics) int { return cmp.Compare(a.Name, b.Name) })
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *skiffv1.PodMetrics) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Uid, b.Uid))
	})
	return out
}

// nanoCores is the CPU rate of cpu nanoseconds used over window
// nanoseconds, in billionths of a core.
func nanoCores(cpu uint64, window int64) int64 {
	if window <= 0 {
		return 0
	}
	// cpu/window cores, scaled by 1e9, without overflowing for any
	// realistic use (cpu is at most a few cores times the window).
	return int64(float64(cpu) / float64(window) * 1e9)
}
