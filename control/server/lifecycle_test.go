package server

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/apiserver"
	"skiff.dev/skiff/control/controllers"
)

// fakePool is the node lifecycle controller's view of the gossip pool, set
// by the test.
type fakePool struct {
	mu      sync.Mutex
	members map[string]controllers.AgentState
	changed chan struct{}
}

func newFakePool() *fakePool {
	return &fakePool{members: map[string]controllers.AgentState{}, changed: make(chan struct{})}
}

func (f *fakePool) set(name string, st controllers.AgentState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.members[name] = st
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakePool) view() *agentView {
	return &agentView{
		agents: func() []controllers.AgentMember {
			f.mu.Lock()
			defer f.mu.Unlock()
			var out []controllers.AgentMember
			for n, st := range f.members {
				out = append(out, controllers.AgentMember{Name: n, State: st})
			}
			return out
		},
		changed: func() <-chan struct{} {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.changed
		},
	}
}

// oneServer starts a server of its own with cfg's settings and waits
// until it answers.
func oneServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	cfg.DataDir, cfg.Listen = t.TempDir(), "127.0.0.1:0"
	s := startServer(t, cfg)
	s.waitReady(t)
	return s
}

func (ts *testServer) nodes() skiffv1connect.NodeServiceClient {
	return skiffv1connect.NewNodeServiceClient(ts.client(), ts.base())
}

func (ts *testServer) services() skiffv1connect.ServiceServiceClient {
	return skiffv1connect.NewServiceServiceClient(ts.client(), ts.base())
}

func (ts *testServer) events() skiffv1connect.EventServiceClient {
	return skiffv1connect.NewEventServiceClient(ts.client(), ts.base())
}

// heartbeat registers node name, or posts its status, as its agent would:
// Ready=True at heartbeat.
func heartbeat(t *testing.T, ctx context.Context, ts *testServer, name string, at time.Time) {
	t.Helper()
	st := &skiffv1.NodeStatus{Conditions: []*skiffv1.Condition{{Type: "Ready", Status: "True", Reason: "AgentReady", LastHeartbeatTime: timestamppb.New(at), LastTransitionTime: timestamppb.New(at)}}}
	res, err := ts.nodes().Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: name}))
	if connect.CodeOf(err) == connect.CodeNotFound {
		if _, err := ts.nodes().Create(ctx, connect.NewRequest(&skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: name}, Status: st})); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	n := res.Msg
	n.Status, n.Metadata.ResourceVersion = st, 0
	if _, err := ts.nodes().UpdateStatus(ctx, connect.NewRequest(n)); err != nil {
		t.Fatal(err)
	}
}

func getNode(ctx context.Context, ts *testServer, name string) *skiffv1.Node {
	res, err := ts.nodes().Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: name}))
	if err != nil {
		return &skiffv1.Node{}
	}
	return res.Msg
}

func nodeReady(n *skiffv1.Node) string {
	for _, c := range n.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c.GetStatus() + "/" + c.GetReason()
		}
	}
	return "none"
}

func taintKeys(n *skiffv1.Node) string {
	var out []string
	for _, t := range n.GetSpec().GetTaints() {
		out = append(out, t.GetKey()+":"+t.GetEffect())
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

func getPod(ctx context.Context, ts *testServer, ns, name string) (*skiffv1.Pod, error) {
	res, err := ts.pods().Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Namespace: ns, Name: name}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// boundPod creates a pod bound to node (as the scheduler would have left
// it).
func boundPod(t *testing.T, ctx context.Context, ts *testServer, ns, name, node string, tols ...*skiffv1.Toleration) *skiffv1.Pod {
	t.Helper()
	p := testPod(name)
	p.Metadata.Namespace = ns
	p.Spec.NodeName = node
	p.Spec.Tolerations = tols
	res, err := ts.pods().Create(ctx, connect.NewRequest(p))
	if err != nil {
		t.Fatal(err)
	}
	return res.Msg
}

// TestNodeLifecycle: a node whose agent the gossip pool says failed is
// marked Ready=Unknown and tainted unreachable within seconds; its pods
// are evicted when their toleration (the server's default, here 2 s) runs
// out, those that tolerate it for ever stay; when the agent is back the
// taints go.
func TestNodeLifecycle(t *testing.T) {
	pool := newFakePool()
	ts := oneServer(t, Config{agents: pool.view(), Tolerations: apiserver.Tolerations{UnreachableSeconds: proto.Int64(2)}})
	ctx := testCtx(t)

	pool.set("a", controllers.AgentAlive)
	heartbeat(t, ctx, ts, "a", time.Now())
	short := boundPod(t, ctx, ts, "default", "short", "a")
	boundPod(t, ctx, ts, "default", "forever", "a", &skiffv1.Toleration{Key: controllers.TaintNodeUnreachable, Operator: "Exists", Effect: "NoExecute"})
	if tols := short.GetSpec().GetTolerations(); len(tols) != 2 || tols[1].GetTolerationSeconds() != 2 {
		t.Fatalf("pod's default tolerations: %v, want not-ready and unreachable for 2s", tols)
	}

	if n := getNode(ctx, ts, "a"); nodeReady(n) != "True/AgentReady" || taintKeys(n) != "" {
		t.Fatalf("live node: Ready %s, taints %q", nodeReady(n), taintKeys(n))
	}

	killed := time.Now()
	pool.set("a", controllers.AgentFailed)
	var marked time.Duration
	eventually(t, 5*time.Second, func() bool {
		n := getNode(ctx, ts, "a")
		marked = time.Since(killed)
		return nodeReady(n) == "Unknown/NodeStatusUnknown" && strings.Contains(taintKeys(n), "unreachable:NoExecute")
	}, func() string {
		n := getNode(ctx, ts, "a")
		return fmt.Sprintf("node whose agent failed: Ready %s, taints %q", nodeReady(n), taintKeys(n))
	})
	t.Logf("node marked Unknown and tainted %s after its agent failed in gossip", marked.Round(time.Millisecond))
	var taintAdded time.Time
	for _, tn := range getNode(ctx, ts, "a").GetSpec().GetTaints() {
		if tn.GetEffect() == "NoExecute" {
			taintAdded = tn.GetTimeAdded().AsTime()
		}
	}
	if taintAdded.IsZero() {
		t.Fatal("the NoExecute taint has no timeAdded")
	}

	eventually(t, 10*time.Second, func() bool {
		p, err := getPod(ctx, ts, "default", "short")
		return err == nil && p.GetMetadata().GetDeletionTimestamp() != nil
	}, func() string { return "the pod tolerating 2s was not evicted" })
	evicted := time.Now()
	if d := evicted.Sub(taintAdded); d < 2*time.Second {
		t.Errorf("pod evicted %s after the taint, before its 2s toleration ran out", d)
	}
	t.Logf("pod tolerating 2s evicted %s after the taint, %s after the agent failed", evicted.Sub(taintAdded).Round(time.Millisecond), evicted.Sub(killed).Round(time.Millisecond))
	p, _ := getPod(ctx, ts, "default", "short")
	var dt *skiffv1.Condition
	for _, c := range p.GetStatus().GetConditions() {
		if c.GetType() == "DisruptionTarget" {
			dt = c
		}
	}
	if dt.GetStatus() != "True" || dt.GetReason() != "DeletionByTaintManager" {
		t.Errorf("evicted pod's DisruptionTarget condition: %v", dt)
	}
	eventually(t, 5*time.Second, func() bool {
		res, err := ts.events().List(ctx, connect.NewRequest(&skiffv1.ListRequest{FieldSelector: "reason=TaintManagerEviction,involvedObject.name=short"}))
		return err == nil && len(res.Msg.GetItems()) == 1
	}, func() string { return "no TaintManagerEviction event for the evicted pod" })
	if p, err := getPod(ctx, ts, "default", "forever"); err != nil || p.GetMetadata().GetDeletionTimestamp() != nil {
		t.Errorf("pod tolerating the taint for ever: %v, %v; want it kept", p.GetMetadata(), err)
	}

	// The agent is back: alive in gossip, posting Ready. The taints go.
	pool.set("a", controllers.AgentAlive)
	heartbeat(t, ctx, ts, "a", time.Now())
	eventually(t, 5*time.Second, func() bool {
		n := getNode(ctx, ts, "a")
		return nodeReady(n) == "True/AgentReady" && taintKeys(n) == ""
	}, func() string {
		n := getNode(ctx, ts, "a")
		return fmt.Sprintf("node whose agent is back: Ready %s, taints %q", nodeReady(n), taintKeys(n))
	})
	// The evicted pod stays terminating: its node confirms when it stops it.
	if p, err := getPod(ctx, ts, "default", "short"); err != nil || p.GetMetadata().GetDeletionTimestamp() == nil {
		t.Errorf("evicted pod after its node came back: %v, %v; want it still terminating", p.GetMetadata(), err)
	}
}

// TestNodeLifecycleHeartbeat: a node whose agent the gossip pool does not
// know is marked Ready=Unknown and tainted once its heartbeat has not
// changed for the grace period, and is Ready again, without the taints,
// once it posts a new one.
func TestNodeLifecycleHeartbeat(t *testing.T) {
	ts := oneServer(t, Config{NodeMonitorGracePeriod: time.Second})
	ctx := testCtx(t)
	heartbeat(t, ctx, ts, "b", time.Now())
	eventually(t, 5*time.Second, func() bool {
		n := getNode(ctx, ts, "b")
		return nodeReady(n) == "Unknown/NodeStatusUnknown" && taintKeys(n) == "node.kubernetes.io/unreachable:NoExecute,node.kubernetes.io/unreachable:NoSchedule"
	}, func() string {
		n := getNode(ctx, ts, "b")
		return fmt.Sprintf("node without a new heartbeat for the grace: Ready %s, taints %q", nodeReady(n), taintKeys(n))
	})
	if msg := readyMessage(getNode(ctx, ts, "b")); !strings.Contains(msg, "Kubelet stopped posting node status") {
		t.Errorf("Ready condition's message: %q", msg)
	}
	heartbeat(t, ctx, ts, "b", time.Now())
	eventually(t, 5*time.Second, func() bool {
		n := getNode(ctx, ts, "b")
		return nodeReady(n) == "True/AgentReady" && taintKeys(n) == ""
	}, func() string {
		n := getNode(ctx, ts, "b")
		return fmt.Sprintf("node posting again: Ready %s, taints %q", nodeReady(n), taintKeys(n))
	})
}

func readyMessage(n *skiffv1.Node) string {
	for _, c := range n.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c.GetMessage()
		}
	}
	return ""
}

// TestGarbageCollector: a pod whose every owner is deleted is deleted; one
// with an owner left stays; one whose owner never existed (by uid) goes.
func TestGarbageCollector(t *testing.T) {
	ts := oneServer(t, Config{})
	ctx := testCtx(t)
	mkSvc := func(name string) *skiffv1.Service {
		res, err := ts.services().Create(ctx, connect.NewRequest(&skiffv1.Service{
			Metadata: &skiffv1.ObjectMeta{Name: name},
			Spec:     &skiffv1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: []*skiffv1.ServicePort{{Port: 80}}},
		}))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg
	}
	ref := func(kind, apiVersion string, m *skiffv1.ObjectMeta) *skiffv1.OwnerReference {
		return &skiffv1.OwnerReference{ApiVersion: apiVersion, Kind: kind, Name: m.GetName(), Uid: m.GetUid()}
	}
	owner, other := mkSvc("owner"), mkSvc("other")
	ns, err := ts.namespaces().Create(ctx, connect.NewRequest(namespace("team")))
	if err != nil {
		t.Fatal(err)
	}
	mkPod := func(name string, refs ...*skiffv1.OwnerReference) {
		p := testPod(name)
		p.Metadata.OwnerReferences = refs
		if _, err := ts.pods().Create(ctx, connect.NewRequest(p)); err != nil {
			t.Fatal(err)
		}
	}
	mkPod("owned", ref("Service", "v1", owner.GetMetadata()))
	mkPod("shared", ref("Service", "v1", owner.GetMetadata()), ref("Service", "v1", other.GetMetadata()))
	mkPod("cluster-owned", ref("Service", "v1", owner.GetMetadata()), ref("Namespace", "v1", ns.Msg.GetMetadata()))
	mkPod("stale-owner", &skiffv1.OwnerReference{ApiVersion: "v1", Kind: "Service", Name: "other", Uid: "00000000-0000-4000-8000-000000000000"})
	mkPod("unowned")

	if _, err := ts.services().Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: "owner"})); err != nil {
		t.Fatal(err)
	}
	names := func() string {
		res, err := ts.pods().List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
		if err != nil {
			return err.Error()
		}
		var out []string
		for _, p := range res.Msg.GetItems() {
			out = append(out, p.GetMetadata().GetName())
		}
		slices.Sort(out)
		return strings.Join(out, " ")
	}
	const want = "cluster-owned shared unowned"
	eventually(t, 10*time.Second, func() bool { return names() == want },
		func() string { return fmt.Sprintf("pods: %q, want %q", names(), want) })

	// A ReplicaSet's pods go after it.
	rss := skiffv1connect.NewReplicaSetServiceClient(ts.client(), ts.base())
	labels := map[string]string{"app": "rs"}
	if _, err := rss.Create(ctx, connect.NewRequest(&skiffv1.ReplicaSet{
		Metadata: &skiffv1.ObjectMeta{Name: "rs"},
		Spec: &skiffv1.ReplicaSetSpec{
			Replicas: proto.Int32(2), Selector: &skiffv1.LabelSelector{MatchLabels: labels},
			Template: &skiffv1.PodTemplateSpec{Metadata: &skiffv1.ObjectMeta{Labels: labels}, Spec: testPod("x").Spec},
		},
	})); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() bool { return strings.Count(names(), "rs-") == 2 },
		func() string { return fmt.Sprintf("pods: %q, want the ReplicaSet's two", names()) })
	if _, err := rss.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: "rs"})); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() bool { return names() == want },
		func() string { return fmt.Sprintf("pods after the ReplicaSet's deletion: %q, want %q", names(), want) })
}

// TestNamespaceCascade: deleting a namespace deletes its pods (a bound one
// gracefully: it waits for its node's confirmation), its services and their
// endpoints, and then the namespace itself; meanwhile the namespace refuses
// new pods.
func TestNamespaceCascade(t *testing.T) {
	ts := oneServer(t, Config{})
	ctx := testCtx(t)
	if _, err := ts.namespaces().Create(ctx, connect.NewRequest(namespace("team"))); err != nil {
		t.Fatal(err)
	}
	heartbeat(t, ctx, ts, "n1", time.Now())
	boundPod(t, ctx, ts, "team", "bound", "n1")
	free := testPod("free")
	free.Metadata.Namespace = "team"
	if _, err := ts.pods().Create(ctx, connect.NewRequest(free)); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.services().Create(ctx, connect.NewRequest(&skiffv1.Service{
		Metadata: &skiffv1.ObjectMeta{Name: "web", Namespace: "team"},
		Spec:     &skiffv1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []*skiffv1.ServicePort{{Port: 80}}},
	})); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.namespaces().Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: "team"})); err != nil {
		t.Fatal(err)
	}
	late := testPod("late")
	late.Metadata.Namespace = "team"
	if _, err := ts.pods().Create(ctx, connect.NewRequest(late)); connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "unable to create new content in namespace team because it is being terminated") {
		t.Errorf("create in the namespace being deleted: %v, want PermissionDenied", err)
	}
	// Every pod is deleted: one not bound at once, a bound one (the
	// scheduler may have bound "free" meanwhile) marked, until its node
	// (played here) stops it and confirms, as an agent does.
	left := func() string {
		var out []string
		pods, err := ts.pods().List(ctx, connect.NewRequest(&skiffv1.ListRequest{Namespace: "team"}))
		if err != nil {
			return err.Error()
		}
		for _, p := range pods.Msg.GetItems() {
			state := "running"
			if p.GetMetadata().GetDeletionTimestamp() != nil {
				state = "terminating"
			}
			out = append(out, "pod/"+p.GetMetadata().GetName()+"("+state+")")
		}
		svcs, err := ts.services().List(ctx, connect.NewRequest(&skiffv1.ListRequest{Namespace: "team"}))
		if err != nil {
			return err.Error()
		}
		for _, s := range svcs.Msg.GetItems() {
			out = append(out, "service/"+s.GetMetadata().GetName())
		}
		return strings.Join(out, " ")
	}
	var pods []*skiffv1.Pod
	eventually(t, 10*time.Second, func() bool {
		if l := left(); strings.Contains(l, "running") || strings.Contains(l, "service/") {
			return false
		}
		res, err := ts.pods().List(ctx, connect.NewRequest(&skiffv1.ListRequest{Namespace: "team"}))
		pods = res.Msg.GetItems()
		return err == nil
	}, func() string { return fmt.Sprintf("left in the namespace: %q, want only terminating pods", left()) })
	if len(pods) == 0 {
		t.Fatal("the bound pod went without its node's confirmation")
	}
	if _, err := ts.namespaces().Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: "team"})); err != nil {
		t.Errorf("the namespace went while a pod was terminating: %v", err)
	}
	for _, p := range pods {
		if _, err := ts.pods().Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Namespace: "team", Name: p.GetMetadata().GetName(), GracePeriodSeconds: proto.Int64(0)})); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, func() bool {
		_, err := ts.namespaces().Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: "team"}))
		return connect.CodeOf(err) == connect.CodeNotFound
	}, func() string { return fmt.Sprintf("the namespace stays; left in it: %q", left()) })
}
