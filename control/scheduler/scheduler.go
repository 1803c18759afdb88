// Package scheduler binds pending pods to nodes. It runs on the Raft leader
// only and sees the cluster through the API client alone, never the store.
//
// Placement is a chain of plugins, as kube-scheduler's framework: filters
// turn down the nodes a pod cannot run on (cordoned, not Ready, without
// the pod's runtime, tainted against it, not picked by its node selector
// or affinity, without room for its requests, off its topology spread or
// pod anti-affinity) and scorers rank the rest (taint toleration, node
// affinity, topology spread, pod anti-affinity, least allocated, balanced
// allocation); framework.go has the order and weights. It binds through
// PodService.Bind, which sets spec.nodeName only on an unbound pod, so a
// second copy running briefly during a leader change can only lose the
// race, never double-bind. It records Scheduled and FailedScheduling events.
package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"skiff.dev/skiff/control/api/events"
	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
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
}

// Scheduler binds pods; Run drives it.
type Scheduler struct {
	pods    skiffv1connect.PodServiceClient
	nodes   skiffv1connect.NodeServiceClient
	events  *events.Recorder
	log     *slog.Logger
	now     func() time.Time
	resync  time.Duration
	profile profile
}

// New returns a Scheduler.
func New(cfg Config) *Scheduler {
	s := &Scheduler{pods: cfg.Pods, nodes: cfg.Nodes, events: cfg.Events, log: cfg.Logger, now: cfg.Now, resync: cfg.Resync}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.resync == 0 {
		s.resync = 5 * time.Second
	}
	s.profile = defaultProfile(s.now)
	return s
}

// Run schedules until ctx ends. It looks at every pending pod whenever a pod
// or node changes, and every Resync besides.
func (s *Scheduler) Run(ctx context.Context) error {
	kick := make(chan struct{}, 1)
	notify := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	go kinds.FollowWatch(ctx, s.log, "pods", func(ctx context.Context, rev uint64) (*connect.ServerStreamForClient[skiffv1.PodWatchEvent], error) {
		return s.pods.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{FieldSelector: "spec.nodeName=", ResourceVersion: rev, AllowBookmarks: true}))
	}, func(st *connect.ServerStreamForClient[skiffv1.PodWatchEvent]) (skiffv1.EventType, uint64) {
		return st.Msg().GetType(), st.Msg().GetObject().GetMetadata().GetResourceVersion()
	}, notify)
	go kinds.FollowWatch(ctx, s.log, "nodes", func(ctx context.Context, rev uint64) (*connect.ServerStreamForClient[skiffv1.NodeWatchEvent], error) {
		return s.nodes.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{ResourceVersion: rev, AllowBookmarks: true}))
	}, func(st *connect.ServerStreamForClient[skiffv1.NodeWatchEvent]) (skiffv1.EventType, uint64) {
		return st.Msg().GetType(), st.Msg().GetObject().GetMetadata().GetResourceVersion()
	}, notify)
	t := time.NewTicker(s.resync)
	defer t.Stop()
	for {
		if err := s.Pass(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("scheduling pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		case <-t.C:
		}
	}
}

// Pass binds every pending, unbound pod it can place, one after the other
// in the order listed, each against a snapshot that counts the pods bound
// before it in the same pass.
func (s *Scheduler) Pass(ctx context.Context) error {
	pods, err := s.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	nodes, err := s.nodes.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	snapshot := newSnapshot(nodes.Msg.Items, pods.Msg.Items)
	for _, p := range pods.Msg.Items {
		if p.GetSpec().GetNodeName() != "" || p.GetMetadata().GetDeletionTimestamp() != nil {
			continue
		}
		if ph := p.GetStatus().GetPhase(); ph != "Pending" && ph != "" {
			continue
		}
		pi := newPodInfo(p)
		node, why := s.profile.place(pi, snapshot)
		if node == nil {
			s.markUnschedulable(ctx, p, why)
			continue
		}
		if err := s.bind(ctx, p, node.name()); err != nil {
			s.log.Info("bind failed; will retry", "pod", podID(p), "node", node.name(), "err", err)
			continue
		}
		node.assume(pi)
	}
	return nil
}

func (s *Scheduler) bind(ctx context.Context, p *skiffv1.Pod, node string) error {
	m := p.GetMetadata()
	res, err := s.pods.Bind(ctx, connect.NewRequest(&skiffv1.BindRequest{
		Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid(), NodeName: node,
	}))
	if err != nil {
		return fmt.Errorf("bind pod %s to %s: %w", podID(p), node, err)
	}
	s.log.Info("bound pod", "pod", podID(p), "node", node)
	s.events.Record(res.Msg, events.Normal, "Scheduled", "Successfully assigned %s to %s", podID(p), node)
	return nil
}

// markUnschedulable records on the pod why it waits, once per distinct
// reason, as a PodScheduled=False condition and a FailedScheduling event.
func (s *Scheduler) markUnschedulable(ctx context.Context, p *skiffv1.Pod, why string) {
	c := &skiffv1.Condition{Type: "PodScheduled", Status: "False", Reason: "Unschedulable", Message: why}
	if !setCondition(p, c, s.now()) {
		return
	}
	s.events.Record(p, events.Warning, "FailedScheduling", "%s", why)
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
		if old.GetStatus() == c.Status && old.GetReason() == c.Reason && old.GetMessage() == c.Message {
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

func podID(p *skiffv1.Pod) string {
	return p.GetMetadata().GetNamespace() + "/" + p.GetMetadata().GetName()
}
