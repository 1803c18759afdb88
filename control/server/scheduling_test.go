package server

import (
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/cluster/pki"
)

// schedEnv is one real server, its scheduler running, with nodes
// registered through the API and no agent behind them.
type schedEnv struct {
	pods   skiffv1connect.PodServiceClient
	nodes  skiffv1connect.NodeServiceClient
	events skiffv1connect.EventServiceClient
}

func newSchedEnv(t *testing.T) *schedEnv {
	t.Helper()
	ts := startServer(t, Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Gossip: freeAddr(t), Token: pki.NewToken()})
	ts.waitReady(t)
	return &schedEnv{
		pods:   ts.pods(),
		nodes:  skiffv1connect.NewNodeServiceClient(ts.client(), ts.base()),
		events: skiffv1connect.NewEventServiceClient(ts.client(), ts.base()),
	}
}

// addNode registers a Ready node that offers wasm, with its spec and labels
// as set changes them.
func (e *schedEnv) addNode(t *testing.T, name string, set func(*skiffv1.Node)) {
	t.Helper()
	ctx := testCtx(t)
	n := &skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: name}, Spec: &skiffv1.NodeSpec{}}
	if set != nil {
		set(n)
	}
	res, err := e.nodes.Create(ctx, connect.NewRequest(n))
	if err != nil {
		t.Fatal(err)
	}
	res.Msg.Status = &skiffv1.NodeStatus{
		Runtimes: []string{"wasm"}, Capacity: map[string]string{"cpu": "4", "memory": "8Gi", "pods": "110"},
		Conditions: []*skiffv1.Condition{{Type: "Ready", Status: "True", LastHeartbeatTime: timestamppb.Now()}},
	}
	if _, err := e.nodes.UpdateStatus(ctx, connect.NewRequest(res.Msg)); err != nil {
		t.Fatal(err)
	}
}

// editNode changes a node's spec or labels through Update.
func (e *schedEnv) editNode(t *testing.T, name string, edit func(*skiffv1.Node)) {
	t.Helper()
	ctx := testCtx(t)
	res, err := e.nodes.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: name}))
	if err != nil {
		t.Fatal(err)
	}
	edit(res.Msg)
	if _, err := e.nodes.Update(ctx, connect.NewRequest(res.Msg)); err != nil {
		t.Fatal(err)
	}
}

// createPod creates a pod with labels app=web and its spec as set changes
// it.
func (e *schedEnv) createPod(t *testing.T, name string, set func(*skiffv1.PodSpec)) {
	t.Helper()
	p := &skiffv1.Pod{
		Metadata: &skiffv1.ObjectMeta{Name: name, Labels: map[string]string{"app": "web"}},
		Spec:     &skiffv1.PodSpec{Containers: []*skiffv1.Container{{Name: "c", Image: "hello"}}},
	}
	if set != nil {
		set(p.Spec)
	}
	if _, err := e.pods.Create(testCtx(t), connect.NewRequest(p)); err != nil {
		t.Fatal(err)
	}
}

func (e *schedEnv) getPod(t *testing.T, name string) *skiffv1.Pod {
	t.Helper()
	res, err := e.pods.Get(testCtx(t), connect.NewRequest(&skiffv1.GetRequest{Name: name}))
	if err != nil {
		t.Fatal(err)
	}
	return res.Msg
}

// waitBound waits until the pod is bound to the node.
func (e *schedEnv) waitBound(t *testing.T, name, node string) {
	t.Helper()
	var got string
	eventually(t, 10*time.Second, func() bool { got = e.getPod(t, name).GetSpec().GetNodeName(); return got == node },
		func() string { return fmt.Sprintf("pod %s bound to %q, want %q", name, got, node) })
}

// waitUnschedulable waits until the pod says why it waits, as a user reads
// it: PodScheduled=False, reason Unschedulable, the message, and a
// FailedScheduling event with the same message; and checks it is unbound.
func (e *schedEnv) waitUnschedulable(t *testing.T, name, msg string) {
	t.Helper()
	var cond *skiffv1.Condition
	var p *skiffv1.Pod
	eventually(t, 10*time.Second, func() bool {
		p = e.getPod(t, name)
		for _, c := range p.GetStatus().GetConditions() {
			if c.GetType() == "PodScheduled" {
				cond = c
			}
		}
		return cond != nil && cond.GetStatus() == "False" && cond.GetReason() == "Unschedulable" && cond.GetMessage() == msg
	}, func() string {
		return fmt.Sprintf("pod %s PodScheduled %v, want False, Unschedulable, %q", name, cond, msg)
	})
	if p.GetSpec().GetNodeName() != "" {
		t.Fatalf("pod %s is unschedulable yet bound to %s", name, p.Spec.NodeName)
	}
	var seen []string
	eventually(t, 10*time.Second, func() bool {
		res, err := e.events.List(testCtx(t), connect.NewRequest(&skiffv1.ListRequest{Namespace: "default", FieldSelector: "involvedObject.uid=" + p.GetMetadata().GetUid()}))
		if err != nil {
			return false
		}
		seen = seen[:0]
		for _, ev := range res.Msg.GetItems() {
			seen = append(seen, ev.GetType()+" "+ev.GetReason()+" "+ev.GetMessage())
			if ev.GetType() == "Warning" && ev.GetReason() == "FailedScheduling" && ev.GetMessage() == msg {
				return true
			}
		}
		return false
	}, func() string {
		return fmt.Sprintf("events of pod %s: %q, want Warning FailedScheduling %q", name, seen, msg)
	})
}

// TestSchedulingRules: through a real server, each placement rule puts a
// pod only where it is allowed, tells why a pod that fits nowhere waits,
// and places it once the cluster changes so that it fits.
func TestSchedulingRules(t *testing.T) {
	t.Run("node selector and affinity", func(t *testing.T) {
		e := newSchedEnv(t)
		e.addNode(t, "a", func(n *skiffv1.Node) { n.Metadata.Labels = map[string]string{"disk": "ssd"} })
		e.addNode(t, "b", nil)
		e.createPod(t, "ssd", func(s *skiffv1.PodSpec) { s.NodeSelector = map[string]string{"disk": "ssd"} })
		e.waitBound(t, "ssd", "a")
		e.createPod(t, "nvme", func(s *skiffv1.PodSpec) {
			s.Affinity = &skiffv1.Affinity{NodeAffinity: &skiffv1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &skiffv1.NodeSelector{
				NodeSelectorTerms: []*skiffv1.NodeSelectorTerm{{MatchExpressions: []*skiffv1.NodeSelectorRequirement{{Key: "disk", Operator: "In", Values: []string{"nvme"}}}}},
			}}}
		})
		e.waitUnschedulable(t, "nvme", "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.")
		e.editNode(t, "b", func(n *skiffv1.Node) { n.Metadata.Labels = map[string]string{"disk": "nvme"} })
		e.waitBound(t, "nvme", "b")
	})

	t.Run("taints and tolerations", func(t *testing.T) {
		e := newSchedEnv(t)
		e.addNode(t, "gpu", func(n *skiffv1.Node) {
			n.Spec.Taints = []*skiffv1.Taint{{Key: "dedicated", Value: "gpu", Effect: "NoSchedule"}}
		})
		e.addNode(t, "edge", func(n *skiffv1.Node) {
			n.Spec.Taints = []*skiffv1.Taint{{Key: "site", Value: "far", Effect: "NoExecute"}}
		})
		e.createPod(t, "trainer", func(s *skiffv1.PodSpec) {
			s.Tolerations = []*skiffv1.Toleration{{Key: "dedicated", Operator: "Equal", Value: "gpu", Effect: "NoSchedule"}}
		})
		e.waitBound(t, "trainer", "gpu")
		e.createPod(t, "plain", nil)
		e.waitUnschedulable(t, "plain", "0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) had untolerated taint {site: far}.")
		e.editNode(t, "gpu", func(n *skiffv1.Node) { n.Spec.Taints = nil })
		e.waitBound(t, "plain", "gpu")
	})

	t.Run("pod anti-affinity", func(t *testing.T) {
		e := newSchedEnv(t)
		e.addNode(t, "a", nil)
		e.addNode(t, "b", nil)
		apart := func(s *skiffv1.PodSpec) {
			s.Affinity = &skiffv1.Affinity{PodAntiAffinity: &skiffv1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []*skiffv1.PodAffinityTerm{{
				LabelSelector: &skiffv1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, TopologyKey: "kubernetes.io/hostname",
			}}}}
		}
		e.createPod(t, "web-1", apart)
		e.createPod(t, "web-2", apart)
		eventually(t, 10*time.Second, func() bool {
			a, b := e.getPod(t, "web-1").GetSpec().GetNodeName(), e.getPod(t, "web-2").GetSpec().GetNodeName()
			return a != "" && b != "" && a != b
		}, func() string { return "web-1 and web-2 not bound to two nodes" })
		e.createPod(t, "web-3", apart)
		e.waitUnschedulable(t, "web-3", "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules.")
		e.addNode(t, "c", nil)
		e.waitBound(t, "web-3", "c")
	})

	t.Run("preferences", func(t *testing.T) {
		e := newSchedEnv(t)
		e.addNode(t, "a", func(n *skiffv1.Node) {
			n.Spec.Taints = []*skiffv1.Taint{{Key: "spot", Effect: "PreferNoSchedule"}}
		})
		e.addNode(t, "b", func(n *skiffv1.Node) { n.Metadata.Labels = map[string]string{"disk": "ssd"} })
		e.addNode(t, "c", nil)
		// b is preferred by weight; then the pod without preferences goes
		// to the node that is neither tainted PreferNoSchedule nor busier.
		e.createPod(t, "likes-ssd", func(s *skiffv1.PodSpec) {
			s.Affinity = &skiffv1.Affinity{NodeAffinity: &skiffv1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []*skiffv1.PreferredSchedulingTerm{{
				Weight: 50, Preference: &skiffv1.NodeSelectorTerm{MatchExpressions: []*skiffv1.NodeSelectorRequirement{{Key: "disk", Operator: "In", Values: []string{"ssd"}}}},
			}}}}
		})
		e.waitBound(t, "likes-ssd", "b")
		e.createPod(t, "plain", nil)
		e.waitBound(t, "plain", "c")
	})

	t.Run("topology spread", func(t *testing.T) {
		e := newSchedEnv(t)
		zone := func(z string, cordoned bool) func(*skiffv1.Node) {
			return func(n *skiffv1.Node) {
				n.Metadata.Labels = map[string]string{"topology.kubernetes.io/zone": z}
				n.Spec.Unschedulable = cordoned
			}
		}
		e.addNode(t, "a", zone("z1", false))
		e.addNode(t, "b", zone("z2", true))
		even := func(s *skiffv1.PodSpec) {
			s.TopologySpreadConstraints = []*skiffv1.TopologySpreadConstraint{{
				MaxSkew: 1, TopologyKey: "topology.kubernetes.io/zone", WhenUnsatisfiable: "DoNotSchedule",
				LabelSelector: &skiffv1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			}}
		}
		e.createPod(t, "web-1", even)
		e.waitBound(t, "web-1", "a")
		// z2's only node is cordoned, yet z2 is a domain with no pods: a
		// second pod in z1 would make the skew 2.
		e.createPod(t, "web-2", even)
		e.waitUnschedulable(t, "web-2", "0/2 nodes are available: 1 node(s) didn't match pod topology spread constraints, 1 node(s) were unschedulable.")
		e.editNode(t, "b", func(n *skiffv1.Node) { n.Spec.Unschedulable = false })
		e.waitBound(t, "web-2", "b")
	})
}
