package controllers

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

// TaintEvictionController evicts the pods bound to a node with a NoExecute
// taint they do not tolerate, at once, and those that tolerate it for a
// while (tolerationSeconds) when that runs out, counted from the taint's
// timeAdded, as Kubernetes' taint eviction controller does. An eviction
// marks the pod DisruptionTarget=True (reason DeletionByTaintManager),
// records a TaintManagerEviction event and deletes the pod gracefully: it
// gets a deletionTimestamp, and its node stops it and confirms, at once or
// when it comes back. Controllers count a terminating pod as gone, so its
// replacement is made meanwhile.
//
// One owner goroutine holds the caches of nodes and pods; a pass looks at
// the pods of tainted nodes alone, on a change and when the earliest
// toleration runs out.
type TaintEvictionController struct {
	Pods  skiffv1connect.PodServiceClient
	Nodes skiffv1connect.NodeServiceClient
	// Events records the evictions; none when nil.
	Events *events.Recorder
	// Now is the clock; time.Now when nil.
	Now    func() time.Time
	Logger *slog.Logger
}

// tolerates reports whether tol tolerates taint, as Kubernetes'
// Toleration.ToleratesTaint: the effects match (an empty one matches all),
// the keys match (an empty one matches all), and the value is equal
// (operator Equal, the default) or anything (Exists).
func tolerates(tol *skiffv1.Toleration, taint *skiffv1.Taint) bool {
	if tol.GetEffect() != "" && tol.GetEffect() != taint.GetEffect() {
		return false
	}
	if tol.GetKey() != "" && tol.GetKey() != taint.GetKey() {
		return false
	}
	switch tol.GetOperator() {
	case "", "Equal":
		return tol.GetValue() == taint.GetValue()
	case "Exists":
		return true
	}
	return false
}

// evictionTime says when p must leave a node with taints: ok false when
// never (no NoExecute taint, or every one tolerated for ever). For each
// NoExecute taint, a pod without a toleration of it goes at once; one with
// tolerations that give seconds stays the least of them from the taint's
// timeAdded (now when unset); one whose tolerations give none stays for
// ever. The pod goes at the earliest of its taints' times.
func evictionTime(p *skiffv1.Pod, taints []*skiffv1.Taint, now time.Time) (at time.Time, ok bool) {
	for _, t := range taints {
		if t.GetEffect() != EffectNoExecute {
			continue
		}
		matched, limited := false, false
		var secs int64
		for _, tol := range p.GetSpec().GetTolerations() {
			if !tolerates(tol, t) {
				continue
			}
			matched = true
			if tol.TolerationSeconds != nil && (!limited || tol.GetTolerationSeconds() < secs) {
				limited, secs = true, tol.GetTolerationSeconds()
			}
		}
		var when time.Time
		switch {
		case !matched:
			when = now
		case !limited:
			continue
		default:
			added := now
			if t.GetTimeAdded() != nil {
				added = t.GetTimeAdded().AsTime()
			}
			when = added.Add(time.Duration(max(secs, 0)) * time.Second)
		}
		if !ok || when.Before(at) {
			at, ok = when, true
		}
	}
	return at, ok
}

// Run evicts pods until ctx ends.
func (c *TaintEvictionController) Run(ctx context.Context) {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := c.Now
	if now == nil {
		now = time.Now
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	changes := make(chan change, 256)
	wg.Go(func() {
		follow(ctx, log, kindNodes, changes, func(ctx context.Context) ([]object, uint64, error) {
			res, err := c.Nodes.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
			if err != nil {
				return nil, 0, err
			}
			return toObjects(res.Msg.GetItems()), res.Msg.GetResourceVersion(), nil
		}, func(ctx context.Context, rev uint64) (*connect.ServerStreamForClient[skiffv1.NodeWatchEvent], error) {
			return c.Nodes.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{ResourceVersion: rev, AllowBookmarks: true}))
		}, func(e *skiffv1.NodeWatchEvent) (skiffv1.EventType, object) { return e.GetType(), e.GetObject() })
	})
	wg.Go(func() {
		follow(ctx, log, kindPods, changes, func(ctx context.Context) ([]object, uint64, error) {
			res, err := c.Pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
			if err != nil {
				return nil, 0, err
			}
			return toObjects(res.Msg.GetItems()), res.Msg.GetResourceVersion(), nil
		}, func(ctx context.Context, rev uint64) (*connect.ServerStreamForClient[skiffv1.PodWatchEvent], error) {
			return c.Pods.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{ResourceVersion: rev, AllowBookmarks: true}))
		}, func(e *skiffv1.PodWatchEvent) (skiffv1.EventType, object) { return e.GetType(), e.GetObject() })
	})

	st := &taintState{tainted: map[string][]*skiffv1.Taint{}, pods: map[string]map[string]*skiffv1.Pod{}}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ch := <-changes:
			st.apply(ch)
			// Take what else has come before a pass: a burst costs one.
			for drained := false; !drained; {
				select {
				case ch := <-changes:
					st.apply(ch)
				default:
					drained = true
				}
			}
		case <-timer.C:
		}
		if !st.listed[0] || !st.listed[1] {
			continue
		}
		next := c.pass(ctx, log, st, now())
		if ctx.Err() != nil {
			return
		}
		timer.Stop()
		if !next.IsZero() {
			timer.Reset(max(next.Sub(now()), 10*time.Millisecond))
		}
	}
}

// taintState is the owner goroutine's: NoExecute taints by node, bound
// pods by node.
type taintState struct {
	tainted map[string][]*skiffv1.Taint
	pods    map[string]map[string]*skiffv1.Pod // node, then uid
	listed  [2]bool                            // nodes, pods
}

func noExecute(n *skiffv1.Node) []*skiffv1.Taint {
	var out []*skiffv1.Taint
	for _, t := range n.GetSpec().GetTaints() {
		if t.GetEffect() == EffectNoExecute {
			out = append(out, t)
		}
	}
	return out
}

func (st *taintState) apply(ch change) {
	switch ch.kind {
	case kindNodes:
		if ch.replace {
			st.listed[0] = true
			st.tainted = map[string][]*skiffv1.Taint{}
			for _, o := range ch.items {
				if ts := noExecute(o.(*skiffv1.Node)); len(ts) > 0 {
					st.tainted[o.GetMetadata().GetName()] = ts
				}
			}
			return
		}
		name := ch.obj.GetMetadata().GetName()
		delete(st.tainted, name)
		if ch.typ != skiffv1.EventType_EVENT_TYPE_DELETED {
			if ts := noExecute(ch.obj.(*skiffv1.Node)); len(ts) > 0 {
				st.tainted[name] = ts
			}
		}
	case kindPods:
		if ch.replace {
			st.listed[1] = true
			st.pods = map[string]map[string]*skiffv1.Pod{}
			for _, o := range ch.items {
				st.put(o.(*skiffv1.Pod))
			}
			return
		}
		p := ch.obj.(*skiffv1.Pod)
		node, uid := p.GetSpec().GetNodeName(), p.GetMetadata().GetUid()
		delete(st.pods[node], uid)
		if len(st.pods[node]) == 0 {
			delete(st.pods, node)
		}
		if ch.typ != skiffv1.EventType_EVENT_TYPE_DELETED {
			st.put(p)
		}
	}
}

// put keeps a bound pod that is not already going.
func (st *taintState) put(p *skiffv1.Pod) {
	node := p.GetSpec().GetNodeName()
	if node == "" || p.GetMetadata().GetDeletionTimestamp() != nil {
		return
	}
	if st.pods[node] == nil {
		st.pods[node] = map[string]*skiffv1.Pod{}
	}
	st.pods[node][p.GetMetadata().GetUid()] = p
}

// pass evicts the pods whose time has come and returns when the next one's
// will (zero: none waits).
func (c *TaintEvictionController) pass(ctx context.Context, log *slog.Logger, st *taintState, now time.Time) time.Time {
	var next time.Time
	later := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for node, taints := range st.tainted {
		for uid, p := range st.pods[node] {
			at, ok := evictionTime(p, taints, now)
			if !ok {
				continue
			}
			if at.After(now) {
				later(at)
				continue
			}
			if err := c.evict(ctx, log, p, node); err != nil {
				if ctx.Err() != nil {
					return next
				}
				log.Warn("taint eviction: evict pod; trying again", "pod", p.GetMetadata().GetNamespace()+"/"+p.GetMetadata().GetName(), "node", node, "err", err)
				later(now.Add(time.Second))
				continue
			}
			delete(st.pods[node], uid) // its deletion's event is on its way
		}
	}
	return next
}

// evict marks p DisruptionTarget and deletes it gracefully. A pod that has
// gone or changed meanwhile is left to the next look (nil error for one
// gone).
func (c *TaintEvictionController) evict(ctx context.Context, log *slog.Logger, p *skiffv1.Pod, node string) error {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	m := p.GetMetadata()
	id := m.GetNamespace() + "/" + m.GetName()
	up := proto.Clone(p).(*skiffv1.Pod)
	if up.Status == nil {
		up.Status = &skiffv1.PodStatus{}
	}
	cond := &skiffv1.Condition{Type: "DisruptionTarget", Status: "True", Reason: "DeletionByTaintManager", Message: "Taint manager: deleting due to NoExecute taint", LastTransitionTime: timestamppb.Now()}
	replaced := false
	for i, old := range up.Status.Conditions {
		if old.GetType() == cond.Type {
			up.Status.Conditions[i], replaced = cond, true
		}
	}
	if !replaced {
		up.Status.Conditions = append(up.Status.Conditions, cond)
	}
	_, err := c.Pods.UpdateStatus(ctx, connect.NewRequest(up))
	switch connect.CodeOf(err) {
	case connect.CodeNotFound:
		return nil
	case connect.CodeAborted:
		return fmt.Errorf("pod %s changed: %w", id, err) // its new version comes by the watch
	}
	if err != nil {
		return fmt.Errorf("mark pod %s DisruptionTarget: %w", id, err)
	}
	if c.Events != nil {
		c.Events.Record(p, events.Normal, "TaintManagerEviction", "Marking for deletion Pod %s", id)
	}
	_, err = c.Pods.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid()}))
	if err != nil && connect.CodeOf(err) != connect.CodeNotFound {
		return fmt.Errorf("delete pod %s: %w", id, err)
	}
	log.Info("taint eviction: pod evicted", "pod", id, "node", node)
	return nil
}
