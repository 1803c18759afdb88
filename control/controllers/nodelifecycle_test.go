package controllers

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

var lcT0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func readyNode(status string, heartbeat time.Time, taints ...*skiffv1.Taint) *skiffv1.Node {
	return &skiffv1.Node{
		Metadata: &skiffv1.ObjectMeta{Name: "a", CreationTimestamp: timestamppb.New(lcT0.Add(-time.Hour))},
		Spec:     &skiffv1.NodeSpec{Taints: taints},
		Status: &skiffv1.NodeStatus{Conditions: []*skiffv1.Condition{{
			Type: "Ready", Status: status, Reason: "AgentReady",
			LastHeartbeatTime: timestamppb.New(heartbeat), LastTransitionTime: timestamppb.New(lcT0.Add(-time.Hour)),
		}}},
	}
}

func TestJudgeNode(t *testing.T) {
	const grace = 40 * time.Second
	fresh, stale := lcT0.Add(-5*time.Second), lcT0.Add(-time.Minute) // when the controller last saw the heartbeat change
	node := readyNode("True", lcT0.Add(-time.Hour))                  // the agent's clock does not count
	for _, tt := range []struct {
		name         string
		node         *skiffv1.Node
		state        AgentState
		inPool, seen bool
		heard        time.Time
		gone         bool
		why          string
	}{
		{"alive, fresh", node, AgentAlive, true, true, fresh, false, ""},
		{"failed in gossip, heartbeat still fresh", node, AgentFailed, true, true, fresh, true, "stopped answering gossip"},
		{"left", node, AgentLeft, true, true, fresh, true, "left the cluster"},
		{"gone from the pool after being seen", node, "", false, true, fresh, true, "no longer in the gossip pool"},
		{"never in the pool, fresh heartbeat", node, "", false, false, fresh, false, ""},
		{"never in the pool, stale heartbeat", node, "", false, false, stale, true, "Kubelet stopped posting node status: no heartbeat for 1m0s (grace 40s)"},
		{"alive but stale heartbeat", node, AgentAlive, true, true, stale, true, "Kubelet stopped posting node status"},
		{"alive again, Unknown not yet replaced by the agent", readyNode("Unknown", lcT0), AgentAlive, true, true, fresh, true, ""},
		{"alive, agent reports False", readyNode("False", lcT0), AgentAlive, true, true, fresh, false, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := judgeNode(tt.node, AgentMember{Name: "a", State: tt.state}, tt.inPool, tt.seen, tt.heard, lcT0, grace)
			if v.gone != tt.gone || !strings.Contains(v.message, tt.why) {
				t.Errorf("judgeNode = %+v, want gone %v with %q", v, tt.gone, tt.why)
			}
		})
	}
}

func TestWantedTaints(t *testing.T) {
	added := timestamppb.New(lcT0.Add(-time.Minute))
	own := &skiffv1.Taint{Key: "dedicated", Value: "gpu", Effect: EffectNoSchedule}
	unreach := func(e string, at *timestamppb.Timestamp) *skiffv1.Taint {
		return &skiffv1.Taint{Key: TaintNodeUnreachable, Effect: e, TimeAdded: at}
	}
	now := timestamppb.New(lcT0)
	for _, tt := range []struct {
		name string
		node *skiffv1.Node
		want []*skiffv1.Taint
	}{
		{"ready: none", readyNode("True", lcT0), nil},
		{"ready: a user's taint stays, ours go", readyNode("True", lcT0, own, unreach(EffectNoExecute, added), unreach(EffectNoSchedule, added)), []*skiffv1.Taint{own}},
		{"unknown: both unreachable taints, now", readyNode("Unknown", lcT0, own), []*skiffv1.Taint{own, unreach(EffectNoSchedule, now), unreach(EffectNoExecute, now)}},
		{"unknown: existing ones keep their time", readyNode("Unknown", lcT0, unreach(EffectNoExecute, added)), []*skiffv1.Taint{unreach(EffectNoExecute, added), unreach(EffectNoSchedule, now)}},
		{"false: not-ready replaces unreachable", readyNode("False", lcT0, unreach(EffectNoExecute, added)), []*skiffv1.Taint{
			{Key: TaintNodeNotReady, Effect: EffectNoSchedule, TimeAdded: now}, {Key: TaintNodeNotReady, Effect: EffectNoExecute, TimeAdded: now}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := wantedTaints(tt.node, lcT0)
			if !sameTaints(got, tt.want) {
				t.Errorf("taints = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMarkUnknown(t *testing.T) {
	n := readyNode("True", lcT0.Add(-time.Minute))
	st := markUnknown(n, "gone", lcT0)
	c := st.GetConditions()[0]
	if c.GetStatus() != "Unknown" || c.GetReason() != "NodeStatusUnknown" || c.GetMessage() != "gone" ||
		!c.GetLastTransitionTime().AsTime().Equal(lcT0) || !c.GetLastHeartbeatTime().AsTime().Equal(lcT0.Add(-time.Minute)) {
		t.Errorf("marked condition: %v", c)
	}
	if readyCondition(n).GetStatus() != "True" {
		t.Errorf("markUnknown changed the node it was given")
	}
	n.Status = st
	if again := markUnknown(n, "gone", lcT0.Add(time.Second)); again != nil {
		t.Errorf("marking a node already Unknown: %v, want nil (nothing to write)", again)
	}
}

func TestEvictionTime(t *testing.T) {
	added := lcT0.Add(-3 * time.Second)
	noExec := &skiffv1.Taint{Key: TaintNodeUnreachable, Effect: EffectNoExecute, TimeAdded: timestamppb.New(added)}
	noSched := &skiffv1.Taint{Key: TaintNodeUnreachable, Effect: EffectNoSchedule, TimeAdded: timestamppb.New(added)}
	other := &skiffv1.Taint{Key: "maintenance", Value: "now", Effect: EffectNoExecute, TimeAdded: timestamppb.New(added)}
	tol := func(key, op, value, effect string, secs *int64) *skiffv1.Toleration {
		return &skiffv1.Toleration{Key: key, Operator: op, Value: value, Effect: effect, TolerationSeconds: secs}
	}
	for _, tt := range []struct {
		name   string
		taints []*skiffv1.Taint
		tols   []*skiffv1.Toleration
		at     time.Time
		ok     bool
	}{
		{"no NoExecute taint", []*skiffv1.Taint{noSched}, nil, time.Time{}, false},
		{"untolerated: at once", []*skiffv1.Taint{noExec}, nil, lcT0, true},
		{"tolerated 5s from timeAdded", []*skiffv1.Taint{noExec}, []*skiffv1.Toleration{tol(TaintNodeUnreachable, "Exists", "", EffectNoExecute, proto.Int64(5))}, added.Add(5 * time.Second), true},
		{"tolerated for ever", []*skiffv1.Taint{noExec}, []*skiffv1.Toleration{tol(TaintNodeUnreachable, "Exists", "", "", nil)}, time.Time{}, false},
		{"least of the matching seconds", []*skiffv1.Taint{noExec}, []*skiffv1.Toleration{
			tol(TaintNodeUnreachable, "Exists", "", EffectNoExecute, proto.Int64(60)), tol("", "Exists", "", "", proto.Int64(10))}, added.Add(10 * time.Second), true},
		{"one taint tolerated, another not", []*skiffv1.Taint{noExec, other}, []*skiffv1.Toleration{tol(TaintNodeUnreachable, "Exists", "", EffectNoExecute, proto.Int64(5))}, lcT0, true},
		{"Equal needs the value", []*skiffv1.Taint{other}, []*skiffv1.Toleration{tol("maintenance", "Equal", "later", "", nil)}, lcT0, true},
		{"Equal with the value, for ever", []*skiffv1.Taint{other}, []*skiffv1.Toleration{tol("maintenance", "", "now", EffectNoExecute, nil)}, time.Time{}, false},
		{"NoSchedule toleration does not count", []*skiffv1.Taint{noExec}, []*skiffv1.Toleration{tol(TaintNodeUnreachable, "Exists", "", EffectNoSchedule, nil)}, lcT0, true},
		{"zero seconds: at timeAdded", []*skiffv1.Taint{noExec}, []*skiffv1.Toleration{tol(TaintNodeUnreachable, "Exists", "", EffectNoExecute, proto.Int64(0))}, added, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := &skiffv1.Pod{Spec: &skiffv1.PodSpec{Tolerations: tt.tols}}
			at, ok := evictionTime(p, tt.taints, lcT0)
			if ok != tt.ok || !at.Equal(tt.at) {
				t.Errorf("evictionTime = %v, %v; want %v, %v", at, ok, tt.at, tt.ok)
			}
		})
	}
}
