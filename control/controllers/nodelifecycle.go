package controllers

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

// The taints the node lifecycle controller puts on a node whose Ready
// condition is not True, with Kubernetes' names: unreachable while it is
// Unknown (the agent is gone), not-ready while it is False (the agent says
// its runtime is not ready). Each comes as a NoSchedule taint, which keeps
// new pods off, and a NoExecute one, which evicts the pods already there
// once their toleration runs out.
const (
	TaintNodeUnreachable = "node.kubernetes.io/unreachable"
	TaintNodeNotReady    = "node.kubernetes.io/not-ready"

	EffectNoSchedule       = "NoSchedule"
	EffectPreferNoSchedule = "PreferNoSchedule"
	EffectNoExecute        = "NoExecute"
)

// DefaultNodeMonitorGracePeriod is how long a node's Ready heartbeat may go
// unchanged before a node that the gossip pool says nothing about is marked
// Unknown, as kube-controller-manager's --node-monitor-grace-period.
const DefaultNodeMonitorGracePeriod = 40 * time.Second

// AgentState is what the gossip pool says of a node's agent.
type AgentState string

// Agent states, as control/cluster names them.
const (
	AgentAlive  AgentState = "alive"
	AgentFailed AgentState = "failed" // stopped answering
	AgentLeft   AgentState = "left"   // said goodbye
)

// AgentMember is one agent of the gossip pool, named as its node.
type AgentMember struct {
	Name  string
	State AgentState
}

// NodeLifecycleController marks a node whose agent is gone Ready=Unknown
// (reason NodeStatusUnknown) and taints it node.kubernetes.io/unreachable
// (NoSchedule and NoExecute); a node whose agent reports Ready=False gets
// node.kubernetes.io/not-ready instead. When the agent is back (alive in
// gossip and posting Ready=True) the taints go.
//
// An agent is gone when the gossip pool says it failed or left, when it
// has left the pool after having been seen in it, or (for an agent the pool
// has never seen: one that does not gossip, or a server that just took
// over) when its Ready heartbeat has not changed for Grace, by the
// controller's clock (a node it first sees gets a full Grace). Gossip notices a
// killed agent in a few seconds, so the controller reacts to its changes at
// once; heartbeats are checked every Every.
//
// The agent's heartbeat sets Ready=True again while it runs. If it still
// posts while the pool says it failed (gossip cut off, the API not), the
// controller marks it Unknown again at its next look: gossip wins, the
// node flaps no faster than the agent's heartbeat.
//
// One owner goroutine holds the nodes' cache; writes are compare-and-swap
// on the version it last saw, so a second copy running during a leader
// change only loses conflicts.
type NodeLifecycleController struct {
	Nodes skiffv1connect.NodeServiceClient
	// Agents returns the agents of the gossip pool as this server sees
	// them; nil when the server does not gossip (heartbeats alone then).
	Agents func() []AgentMember
	// AgentsChanged returns a channel closed at the next change of what
	// Agents returns; nil with Agents.
	AgentsChanged func() <-chan struct{}
	// Grace is DefaultNodeMonitorGracePeriod when zero.
	Grace time.Duration
	// Every is how often heartbeats are checked (a second when zero).
	Every time.Duration
	// Now is the clock; time.Now when nil.
	Now    func() time.Time
	Logger *slog.Logger
}

// nodeVerdict is what the controller makes of one node.
type nodeVerdict struct {
	// gone: the agent is gone; Ready must be Unknown, for message.
	gone    bool
	message string
}

// judgeNode decides whether n's agent is gone. m is its gossip member
// (inPool says whether the pool has one), seen whether the pool ever had
// it alive. heard is when this controller last saw the node's Ready
// heartbeat change, by its own clock, as Kubernetes' probe timestamp: a
// node first seen gets a full grace, and the agents' clocks do not count.
func judgeNode(n *skiffv1.Node, m AgentMember, inPool, seen bool, heard, now time.Time, grace time.Duration) nodeVerdict {
	switch {
	case inPool && m.State == AgentFailed:
		return nodeVerdict{true, "the node's agent stopped answering gossip: it has failed or is cut off"}
	case inPool && m.State == AgentLeft:
		return nodeVerdict{true, "the node's agent left the cluster"}
	case !inPool && seen:
		return nodeVerdict{true, "the node's agent is no longer in the gossip pool"}
	}
	if now.Sub(heard) > grace {
		return nodeVerdict{true, fmt.Sprintf("Kubelet stopped posting node status: no heartbeat for %s (grace %s).", now.Sub(heard).Round(time.Second), grace)}
	}
	if ready := readyCondition(n); ready != nil && ready.GetStatus() == "Unknown" {
		// Marked by this controller: the agent is back once it posts
		// Ready itself.
		return nodeVerdict{true, ready.GetMessage()}
	}
	return nodeVerdict{}
}

// heartbeatOf is the node's Ready heartbeat as its agent wrote it (zero
// when it has none), for telling a new one from the last.
func heartbeatOf(n *skiffv1.Node) time.Time {
	if t := readyCondition(n).GetLastHeartbeatTime(); t != nil {
		return t.AsTime()
	}
	return time.Time{}
}

// heard is when the controller last saw a node's heartbeat change.
type heard struct {
	heartbeat, at time.Time
}

func readyCondition(n *skiffv1.Node) *skiffv1.Condition {
	for _, c := range n.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c
		}
	}
	return nil
}

// wantedTaints returns n's taints as the Ready condition calls for: the
// controller's own (unreachable, not-ready) added or removed, every other
// taint kept. The ones it adds have timeAdded now.
func wantedTaints(n *skiffv1.Node, now time.Time) []*skiffv1.Taint {
	var key string
	switch readyCondition(n).GetStatus() {
	case "Unknown":
		key = TaintNodeUnreachable
	case "False":
		key = TaintNodeNotReady
	}
	var out []*skiffv1.Taint
	have := map[string]bool{}
	for _, t := range n.GetSpec().GetTaints() {
		if k := t.GetKey(); (k == TaintNodeUnreachable || k == TaintNodeNotReady) && k != key {
			continue
		}
		if t.GetKey() == key {
			have[t.GetEffect()] = true
		}
		out = append(out, t)
	}
	if key != "" {
		for _, e := range []string{EffectNoSchedule, EffectNoExecute} {
			if !have[e] {
				out = append(out, &skiffv1.Taint{Key: key, Effect: e, TimeAdded: timestamppb.New(now)})
			}
		}
	}
	return out
}

// markUnknown returns n's status with every condition Unknown, reason
// NodeStatusUnknown, keeping the heartbeat times; nil when it is so
// already.
func markUnknown(n *skiffv1.Node, message string, now time.Time) *skiffv1.NodeStatus {
	st := proto.Clone(n.GetStatus()).(*skiffv1.NodeStatus)
	if st == nil {
		st = &skiffv1.NodeStatus{}
	}
	if readyCondition(n) == nil {
		st.Conditions = append(st.Conditions, &skiffv1.Condition{Type: "Ready"})
	}
	changed := false
	for _, c := range st.Conditions {
		if c.GetStatus() == "Unknown" && c.GetReason() == "NodeStatusUnknown" {
			continue
		}
		changed = true
		if c.GetStatus() != "Unknown" || c.LastTransitionTime == nil {
			c.LastTransitionTime = timestamppb.New(now)
		}
		c.Status, c.Reason, c.Message = "Unknown", "NodeStatusUnknown", message
	}
	if !changed {
		return nil
	}
	return st
}

func sameTaints(a, b []*skiffv1.Taint) bool {
	return slices.EqualFunc(a, b, func(x, y *skiffv1.Taint) bool { return proto.Equal(x, y) })
}

// Run keeps nodes' conditions and taints until ctx ends.
func (c *NodeLifecycleController) Run(ctx context.Context) {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	grace, every, now := c.Grace, c.Every, c.Now
	if grace == 0 {
		grace = DefaultNodeMonitorGracePeriod
	}
	if every == 0 {
		every = time.Second
	}
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

	nodes := map[string]*skiffv1.Node{}
	seen := map[string]bool{}    // agents the pool has had alive
	probes := map[string]heard{} // when each node's heartbeat last changed
	observe := func(n *skiffv1.Node) {
		name, hb := n.GetMetadata().GetName(), heartbeatOf(n)
		if p, ok := probes[name]; !ok || !p.heartbeat.Equal(hb) {
			probes[name] = heard{heartbeat: hb, at: now()}
		}
		nodes[name] = n
	}
	listed := false
	tick := time.NewTicker(every)
	defer tick.Stop()
	var poolChanged <-chan struct{}
	if c.AgentsChanged != nil {
		poolChanged = c.AgentsChanged()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ch := <-changes:
			if ch.replace {
				listed = true
				nodes = map[string]*skiffv1.Node{}
				for _, o := range ch.items {
					observe(o.(*skiffv1.Node))
				}
				for name := range probes {
					if nodes[name] == nil {
						delete(probes, name)
					}
				}
			} else if ch.typ == skiffv1.EventType_EVENT_TYPE_DELETED {
				delete(nodes, ch.obj.GetMetadata().GetName())
				delete(probes, ch.obj.GetMetadata().GetName())
			} else {
				observe(ch.obj.(*skiffv1.Node))
			}
			continue // the tick, or a pool change, looks: a burst of heartbeats costs one pass
		case <-tick.C:
		case <-poolChanged:
			poolChanged = c.AgentsChanged()
		}
		if !listed {
			continue
		}
		members := map[string]AgentMember{}
		if c.Agents != nil {
			for _, m := range c.Agents() {
				members[m.Name] = m
				if m.State == AgentAlive {
					seen[m.Name] = true
				}
			}
		}
		t := now()
		for name, n := range nodes {
			m, in := members[name]
			v := judgeNode(n, m, in, seen[name], probes[name].at, t, grace)
			out, err := c.sync(ctx, n, v, t)
			if out != nil {
				observe(out)
			}
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				lvl := slog.LevelWarn
				if connect.CodeOf(err) == connect.CodeAborted || connect.CodeOf(err) == connect.CodeNotFound {
					lvl = slog.LevelDebug // the node changed; its event is on its way
				}
				log.Log(ctx, lvl, "node lifecycle: sync node; trying again", "node", name, "err", err)
			}
		}
	}
}

// sync writes n's Ready condition and taints as v calls for, and returns
// the node written, or nil when nothing was.
func (c *NodeLifecycleController) sync(ctx context.Context, n *skiffv1.Node, v nodeVerdict, now time.Time) (*skiffv1.Node, error) {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	var written *skiffv1.Node
	if v.gone {
		if st := markUnknown(n, v.message, now); st != nil {
			up := proto.Clone(n).(*skiffv1.Node)
			up.Status = st
			res, err := c.Nodes.UpdateStatus(ctx, connect.NewRequest(up))
			if err != nil {
				return nil, fmt.Errorf("mark node %s Ready=Unknown: %w", n.GetMetadata().GetName(), err)
			}
			if c.Logger != nil {
				c.Logger.Info("node lifecycle: node's agent is gone; Ready=Unknown", "node", n.GetMetadata().GetName(), "why", v.message)
			}
			n, written = res.Msg, res.Msg
		}
	}
	taints := wantedTaints(n, now)
	if sameTaints(taints, n.GetSpec().GetTaints()) {
		return written, nil
	}
	up := proto.Clone(n).(*skiffv1.Node)
	if up.Spec == nil {
		up.Spec = &skiffv1.NodeSpec{}
	}
	up.Spec.Taints = taints
	res, err := c.Nodes.Update(ctx, connect.NewRequest(up))
	if err != nil {
		return written, fmt.Errorf("taint node %s: %w", n.GetMetadata().GetName(), err)
	}
	return res.Msg, nil
}
