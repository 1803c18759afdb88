// Package scheduler binds pending pods to nodes. It runs on the Raft leader
// only and sees the cluster through the API client alone, never the store.
//
// It keeps a cache of every pod and node, fed by watches, and a queue of
// the pods to place. Each cycle places the queued pods against one
// snapshot of the cache. Placement is a chain of plugins, as
// kube-scheduler's framework: filters turn down the nodes a pod cannot run
// on (cordoned, not Ready, without the pod's runtime, tainted against it,
// not picked by its node selector or affinity, without room for its
// requests, off its topology spread or pod anti-affinity) and scorers rank
// the rest (taint toleration, node affinity, topology spread, pod
// anti-affinity, least allocated, balanced allocation); framework.go has
// the order and weights. It binds in batches through PodService.BindBatch,
// several calls in flight while the next cycle places more; the apiserver
// sets spec.nodeName only on an unbound pod, so a second copy running
// briefly during a leader change can only lose the race, never
// double-bind. A pod no node takes waits until a node is added or changes,
// a bound pod finishes or goes, or the resync. It records Scheduled and
// FailedScheduling events.
package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"skiff.dev/skiff/control/api/events"
	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

// HeartbeatGrace is how old a node's Ready heartbeat may be before the
// scheduler stops placing pods on it.
const HeartbeatGrace = 40 * time.Second

// Config is what New needs.
type Config struct {
	Pods  skiffv1connect.PodServiceClient
	Nodes skiffv1connect.NodeServiceClient
	// Events records Scheduled and FailedScheduling; none when nil.
	Events *events.Recorder
	Logger *slog.Logger
	// Now is the clock heartbeats are judged by; time.Now when nil.
	Now func() time.Time
	// Resync is how often every pending pod is looked at again even when
	// nothing changed; 5s when zero.
	Resync time.Duration
	// Hold, when not nil, keeps Run from placing any pod until it is
	// closed; its watches fill the cache meanwhile. For benchmarks that
	// measure the placement of a backlog.
	Hold <-chan struct{}
}

// Scheduler binds pods; Run drives it.
type Scheduler struct {
	pods    skiffv1connect.PodServiceClient
	nodes   skiffv1connect.NodeServiceClient
	events  *events.Recorder
	log     *slog.Logger
	now     func() time.Time
	resync  time.Duration
	hold    <-chan struct{}
	profile profile
	cache   *cache
	// snapshot is the nodes as the last cycle left them, and index where
	// each name is in it; only the scheduling loop uses them.
	snapshot []*nodeInfo
	index    map[string]int
	// cycleNow is s.now() when the running cycle began: the plugins' clock.
	cycleNow time.Time
}

// Batching of bindings: a cycle places up to cycleLimit queued pods
// against one snapshot and sends their bindings in BindBatch calls of up
// to bindBatchSize, bindWorkers of them in flight while the next cycle
// places more.
const (
	cycleLimit    = 10000
	bindBatchSize = 500
	bindWorkers   = 4
	bindTimeout   = 30 * time.Second // a BindBatch or a status write
)

// New returns a Scheduler.
func New(cfg Config) *Scheduler {
	s := &Scheduler{pods: cfg.Pods, nodes: cfg.Nodes, events: cfg.Events, log: cfg.Logger, now: cfg.Now, resync: cfg.Resync, hold: cfg.Hold, cache: newCache()}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.resync == 0 {
		s.resync = 5 * time.Second
	}
	s.profile = defaultProfile(func() time.Time { return s.cycleNow })
	s.profile.next = new(int)
	return s
}

// Run schedules until ctx ends. It keeps its cache of pods and nodes by
// watching them, places the pods queued whenever there are any (once Hold
// is closed, when there is one), and looks at every pending pod again
// every Resync.
func (s *Scheduler) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	// The workers write what a cycle decided, bindings and unschedulable
	// marks, while the next cycle places more.
	binds := make(chan []binding)
	defer close(binds)
	marks := make(chan mark, cycleLimit)
	defer close(marks)
	for range bindWorkers {
		wg.Go(func() {
			for bs := range binds {
				s.bindBatch(ctx, bs)
			}
		})
		wg.Go(func() {
			for m := range marks {
				s.markUnschedulable(ctx, m.pod, m.why)
			}
		})
	}
	wg.Go(func() {
		follow(ctx, s.log, "pods", func(ctx context.Context) ([]*skiffv1.Pod, uint64, error) {
			res, err := s.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
			if err != nil {
				return nil, 0, err
			}
			return res.Msg.GetItems(), res.Msg.GetResourceVersion(), nil
		}, func(ctx context.Context, rev uint64) (*connect.ServerStreamForClient[skiffv1.PodWatchEvent], error) {
			return s.pods.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{ResourceVersion: rev, AllowBookmarks: true}))
		}, s.cache.replacePods, func(ev *skiffv1.PodWatchEvent) uint64 {
			if ev.GetType() != skiffv1.EventType_EVENT_TYPE_BOOKMARK {
				s.cache.podEvent(ev.GetType(), ev.GetObject())
			}
			return ev.GetObject().GetMetadata().GetResourceVersion()
		})
	})
	wg.Go(func() {
		follow(ctx, s.log, "nodes", func(ctx context.Context) ([]*skiffv1.Node, uint64, error) {
			res, err := s.nodes.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
			if err != nil {
				return nil, 0, err
			}
			return res.Msg.GetItems(), res.Msg.GetResourceVersion(), nil
		}, func(ctx context.Context, rev uint64) (*connect.ServerStreamForClient[skiffv1.NodeWatchEvent], error) {
			return s.nodes.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{ResourceVersion: rev, AllowBookmarks: true}))
		}, s.cache.replaceNodes, func(ev *skiffv1.NodeWatchEvent) uint64 {
			if ev.GetType() != skiffv1.EventType_EVENT_TYPE_BOOKMARK {
				s.cache.nodeEvent(ev.GetType(), ev.GetObject())
			}
			return ev.GetObject().GetMetadata().GetResourceVersion()
		})
	})
	out := decisions{
		bind: func(bs []binding) {
			select {
			case binds <- bs:
			case <-ctx.Done():
				s.cache.forgetAll(bs)
			}
		},
		mark: func(p *skiffv1.Pod, why string) {
			select {
			case marks <- mark{p, why}:
			case <-ctx.Done():
			}
		},
	}
	if s.hold != nil {
		select {
		case <-s.hold:
		case <-ctx.Done():
			return nil
		}
	}
	t := time.NewTicker(s.resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.cache.kick:
		case <-t.C:
			s.cache.resync()
			continue
		}
		for ctx.Err() == nil && s.cycle(out) {
		}
	}
}

// Pass lists every pod and node and places every pending, unbound pod it
// can, one after the other in the order queued, each against a snapshot
// that counts the pods placed before it, and binds them before it
// returns. Run does the same from its watches; Pass is a pass on demand.
func (s *Scheduler) Pass(ctx context.Context) error {
	pods, err := s.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	nodes, err := s.nodes.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	s.cache.replacePods(pods.Msg.Items)
	s.cache.replaceNodes(nodes.Msg.Items)
	for range s.cache.queueLen()/cycleLimit + 1 {
		if !s.cycle(decisions{
			bind: func(bs []binding) { s.bindBatch(ctx, bs) },
			mark: func(p *skiffv1.Pod, why string) { s.markUnschedulable(ctx, p, why) },
		}) {
			break
		}
	}
	return nil
}

// binding is a pod placed on a node, to be bound.
type binding struct {
	pod  *skiffv1.Pod
	node string
}

// mark is a pod no node takes, and why.
type mark struct {
	pod *skiffv1.Pod
	why string
}

// decisions is where a cycle hands what it decided: batches of bindings,
// each assumed in the cache first, and pods to mark unschedulable.
type decisions struct {
	bind func([]binding)
	mark func(p *skiffv1.Pod, why string)
}

// cycle places up to cycleLimit queued pods against one snapshot of the
// cache, handing their bindings to out in batches (each assumed in the
// cache first, so that the next cycle counts them), and the pods no node
// takes to be marked unschedulable. It reports whether it took any pod.
func (s *Scheduler) cycle(out decisions) bool {
	v := s.cache.take(cycleLimit)
	if len(v.todo) == 0 {
		return false
	}
	// Heartbeats are judged by one clock reading a cycle.
	s.cycleNow = s.now()
	if v.full {
		s.snapshot = nil
	} else {
		for _, p := range v.bound {
			if i, ok := s.index[p.GetSpec().GetNodeName()]; ok {
				s.snapshot[i].assume(newPodInfo(p))
			}
		}
		// A node that changed is counted afresh, in its place (the cache
		// asks for a new snapshot when its labels or taints changed).
		for name, r := range v.refresh {
			if i, ok := s.index[name]; ok {
				s.snapshot[i] = refreshNode(s.snapshot[i], r.node, r.pods)
			}
		}
	}
	if s.snapshot == nil {
		s.snapshot = newSnapshot(v.nodes, v.bound)
		s.index = make(map[string]int, len(s.snapshot))
		for i, n := range s.snapshot {
			s.index[n.name()] = i
		}
	}
	snapshot := s.snapshot
	var batch []binding
	flush := func() {
		if len(batch) > 0 {
			s.cache.assume(batch)
			out.bind(batch)
			batch = nil
		}
	}
	for _, p := range v.todo {
		pi := newPodInfo(p)
		node, why := s.profile.place(pi, snapshot)
		if node == nil {
			// Waiting first, so that the watch event of the status
			// written next does not queue it again.
			s.cache.unschedulable(p, v.changes)
			out.mark(p, why)
			continue
		}
		node.assume(pi)
		batch = append(batch, binding{pod: p, node: node.name()})
		if len(batch) == bindBatchSize {
			flush()
		}
	}
	flush()
	return true
}

// bindBatch binds a batch in one BindBatch call and records a Scheduled
// event for each pod bound. A binding that failed is forgotten: the pod is
// placed again at once when it changed under the binding, on the next
// change or resync when the call failed, and not at all when it is bound
// or gone meanwhile (the watch tells).
func (s *Scheduler) bindBatch(ctx context.Context, bs []binding) {
	req := &skiffv1.BindBatchRequest{Bindings: make([]*skiffv1.BindRequest, len(bs))}
	for i, b := range bs {
		m := b.pod.GetMetadata()
		req.Bindings[i] = &skiffv1.BindRequest{Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid(), NodeName: b.node}
	}
	ctx, cancel := context.WithTimeout(ctx, bindTimeout)
	defer cancel()
	res, err := s.pods.BindBatch(ctx, connect.NewRequest(req))
	if err == nil && len(res.Msg.GetResults()) != len(bs) {
		err = fmt.Errorf("%d results for %d bindings", len(res.Msg.GetResults()), len(bs))
	}
	if err != nil {
		s.log.Warn("bind a batch failed; will retry", "pods", len(bs), "err", err)
		s.cache.forgetAll(bs)
		return
	}
	bound := 0
	for i, r := range res.Msg.GetResults() {
		b := bs[i]
		if r.GetCode() == "" {
			bound++
			s.log.Debug("bound pod", "pod", podID(b.pod), "node", b.node)
			s.events.Record(b.pod, events.Normal, "Scheduled", "Successfully assigned %s to %s", podID(b.pod), b.node)
			continue
		}
		how := waitIt
		switch r.GetCode() {
		case connect.CodeAborted.String():
			how = queueIt
		case connect.CodeFailedPrecondition.String(), connect.CodeNotFound.String():
			how = dropIt
		}
		s.log.Info("bind failed", "pod", podID(b.pod), "node", b.node, "code", r.GetCode(), "err", r.GetMessage())
		s.cache.forget(b.pod, how)
	}
	s.log.Debug("bound a batch", "pods", bound, "of", len(bs))
}

// markUnschedulable records on the pod why it waits, once per distinct
// reason, as a PodScheduled=False condition and a FailedScheduling event.
func (s *Scheduler) markUnschedulable(ctx context.Context, p *skiffv1.Pod, why string) {
	c := &skiffv1.Condition{Type: "PodScheduled", Status: "False", Reason: "Unschedulable", Message: why}
	// A pod waiting again was most often marked for the same reason
	// before: look at the cache's copy, and clone it only to change it.
	for _, old := range p.GetStatus().GetConditions() {
		if old.GetType() == c.Type && sameCondition(old, c) {
			return
		}
	}
	p = proto.Clone(p).(*skiffv1.Pod) // the cache's copy is shared
	if !setCondition(p, c, s.now()) {
		return
	}
	s.events.Record(p, events.Warning, "FailedScheduling", "%s", why)
	ctx, cancel := context.WithTimeout(ctx, bindTimeout)
	defer cancel()
	if _, err := s.pods.UpdateStatus(ctx, connect.NewRequest(p)); err != nil {
		s.log.Debug("record unschedulable", "pod", podID(p), "err", err)
	}
}

// setCondition puts c on the pod's status and reports whether anything changed.
func setCondition(p *skiffv1.Pod, c *skiffv1.Condition, now time.Time) bool {
	if p.Status == nil {
		p.Status = &skiffv1.PodStatus{Phase: "Pending"}
	}
	for i, old := range p.Status.Conditions {
		if old.GetType() != c.Type {
			continue
		}
		if sameCondition(old, c) {
			return false
		}
		c.LastTransitionTime = timestamppb.New(now)
		p.Status.Conditions[i] = c
		return true
	}
	c.LastTransitionTime = timestamppb.New(now)
	p.Status.Conditions = append(p.Status.Conditions, c)
	return true
}

// sameCondition reports whether a says what b says (its time aside).
func sameCondition(a, b *skiffv1.Condition) bool {
	return a.GetStatus() == b.GetStatus() && a.GetReason() == b.GetReason() && a.GetMessage() == b.GetMessage()
}

func podID(p *skiffv1.Pod) string {
	return p.GetMetadata().GetNamespace() + "/" + p.GetMetadata().GetName()
}
