package scheduler

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

var now = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// fakeAPI serves List from fixed objects and records every Bind and
// UpdateStatus.
type fakeAPI struct {
	pods    []*skiffv1.Pod
	nodes   []*skiffv1.Node
	updates []*skiffv1.Pod
	batches []int // the size of each BindBatch
}

// podsFake is the pod client; methods the scheduler must not call panic.
type podsFake struct {
	skiffv1connect.PodServiceClient
	*fakeAPI
}

func (p podsFake) List(context.Context, *connect.Request[skiffv1.ListRequest]) (*connect.Response[skiffv1.PodList], error) {
	items := make([]*skiffv1.Pod, len(p.pods))
	for i, pod := range p.pods {
		items[i] = proto.Clone(pod).(*skiffv1.Pod)
	}
	return connect.NewResponse(&skiffv1.PodList{Items: items}), nil
}

func (p podsFake) UpdateStatus(_ context.Context, r *connect.Request[skiffv1.Pod]) (*connect.Response[skiffv1.Pod], error) {
	p.updates = append(p.updates, r.Msg)
	for _, old := range p.pods {
		if old.Metadata.Name == r.Msg.Metadata.Name {
			old.Status = r.Msg.Status
		}
	}
	return connect.NewResponse(r.Msg), nil
}

// Bind binds as the apiserver does: nodeName and PodScheduled=True.
func (p podsFake) Bind(_ context.Context, r *connect.Request[skiffv1.BindRequest]) (*connect.Response[skiffv1.Pod], error) {
	for _, old := range p.pods {
		if old.Metadata.Name == r.Msg.Name {
			old.Spec.NodeName = r.Msg.NodeName
			old.Status.Conditions = append(old.Status.Conditions, &skiffv1.Condition{Type: "PodScheduled", Status: "True"})
			p.updates = append(p.updates, old)
			return connect.NewResponse(old), nil
		}
	}
	return nil, connect.NewError(connect.CodeNotFound, nil)
}

// BindBatch binds each as Bind does.
func (p podsFake) BindBatch(ctx context.Context, r *connect.Request[skiffv1.BindBatchRequest]) (*connect.Response[skiffv1.BindBatchResponse], error) {
	p.batches = append(p.batches, len(r.Msg.Bindings))
	out := &skiffv1.BindBatchResponse{}
	for _, b := range r.Msg.Bindings {
		res, err := p.Bind(ctx, connect.NewRequest(b))
		if err != nil {
			out.Results = append(out.Results, &skiffv1.BindResult{Code: connect.CodeOf(err).String(), Message: err.Error()})
			continue
		}
		out.Results = append(out.Results, &skiffv1.BindResult{ResourceVersion: res.Msg.GetMetadata().GetResourceVersion() + 1})
	}
	return connect.NewResponse(out), nil
}

type nodesFake struct {
	skiffv1connect.NodeServiceClient
	*fakeAPI
}

func (n nodesFake) List(context.Context, *connect.Request[skiffv1.ListRequest]) (*connect.Response[skiffv1.NodeList], error) {
	return connect.NewResponse(&skiffv1.NodeList{Items: n.nodes}), nil
}

func node(name string, mutate ...func(*skiffv1.Node)) *skiffv1.Node {
	n := &skiffv1.Node{
		Metadata: &skiffv1.ObjectMeta{Name: name},
		Spec:     &skiffv1.NodeSpec{},
		Status: &skiffv1.NodeStatus{
			Runtimes:   []string{"wasm"},
			Conditions: []*skiffv1.Condition{{Type: "Ready", Status: "True", LastHeartbeatTime: timestamppb.New(now.Add(-5 * time.Second))}},
		},
	}
	for _, m := range mutate {
		m(n)
	}
	return n
}

func pod(name, nodeName, runtime string) *skiffv1.Pod {
	return &skiffv1.Pod{
		Metadata: &skiffv1.ObjectMeta{Name: name, Namespace: "default"},
		Spec:     &skiffv1.PodSpec{NodeName: nodeName, RuntimeClassName: runtime, Containers: []*skiffv1.Container{{Name: "c", Image: "i"}}},
		Status:   &skiffv1.PodStatus{Phase: "Pending"},
	}
}

func newFake(pods []*skiffv1.Pod, nodes []*skiffv1.Node) (*fakeAPI, *Scheduler) {
	f := &fakeAPI{pods: pods, nodes: nodes}
	return f, New(Config{Pods: podsFake{fakeAPI: f}, Nodes: nodesFake{fakeAPI: f}, Now: func() time.Time { return now }})
}

func TestPass(t *testing.T) {
	notReady := func(n *skiffv1.Node) { n.Status.Conditions[0].Status = "False" }
	stale := func(n *skiffv1.Node) {
		n.Status.Conditions[0].LastHeartbeatTime = timestamppb.New(now.Add(-time.Minute))
	}
	cordoned := func(n *skiffv1.Node) { n.Spec.Unschedulable = true }
	tests := []struct {
		name     string
		pods     []*skiffv1.Pod
		nodes    []*skiffv1.Node
		wantNode string // of pod "new"; "" = stays unbound
		wantMsg  string // the PodScheduled=False message when unbound
	}{
		{"one ready node", []*skiffv1.Pod{pod("new", "", "")}, []*skiffv1.Node{node("a")}, "a", ""},
		{"least loaded wins", []*skiffv1.Pod{pod("x", "a", ""), pod("new", "", "")}, []*skiffv1.Node{node("a"), node("b")}, "b", ""},
		{"ties go by name", []*skiffv1.Pod{pod("new", "", "")}, []*skiffv1.Node{node("b"), node("a")}, "a", ""},
		{"not ready is skipped", []*skiffv1.Pod{pod("new", "", "")}, []*skiffv1.Node{node("a", notReady), node("b")}, "b", ""},
		{"stale heartbeat is not ready", []*skiffv1.Pod{pod("new", "", "")}, []*skiffv1.Node{node("a", stale)}, "", "0/1 nodes are available: 1 node(s) were not ready"},
		{"cordoned", []*skiffv1.Pod{pod("new", "", "")}, []*skiffv1.Node{node("a", cordoned)}, "", "1 node(s) were unschedulable"},
		{"runtime missing", []*skiffv1.Pod{pod("new", "", "runc")}, []*skiffv1.Node{node("a")}, "", `1 node(s) did not offer runtime "runc"`},
		{"no nodes", []*skiffv1.Pod{pod("new", "", "")}, nil, "", "0/0 nodes are available"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, s := newFake(tt.pods, tt.nodes)
			if err := s.Pass(context.Background()); err != nil {
				t.Fatal(err)
			}
			var got *skiffv1.Pod
			for _, p := range f.pods {
				if p.Metadata.Name == "new" {
					got = p
				}
			}
			if got.Spec.NodeName != tt.wantNode {
				t.Fatalf("pod bound to %q, want %q", got.Spec.NodeName, tt.wantNode)
			}
			var cond *skiffv1.Condition
			for _, c := range got.GetStatus().GetConditions() {
				if c.Type == "PodScheduled" {
					cond = c
				}
			}
			if tt.wantNode != "" {
				if cond == nil || cond.Status != "True" {
					t.Errorf("bound pod has PodScheduled %v", cond)
				}
				return
			}
			if cond == nil || cond.Status != "False" || cond.Reason != "Unschedulable" || !strings.Contains(cond.Message, tt.wantMsg) {
				t.Errorf("unbound pod has PodScheduled %v, want message with %q", cond, tt.wantMsg)
			}
			// A second pass with nothing new writes nothing.
			n := len(f.updates)
			if err := s.Pass(context.Background()); err != nil {
				t.Fatal(err)
			}
			if len(f.updates) != n {
				t.Errorf("second pass wrote %d more updates", len(f.updates)-n)
			}
		})
	}
}

func TestPassLeavesBoundAndFinishedPods(t *testing.T) {
	done := pod("done", "", "")
	done.Status.Phase = "Failed"
	f, s := newFake([]*skiffv1.Pod{pod("bound", "a", ""), done}, []*skiffv1.Node{node("a")})
	if err := s.Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(f.updates) != 0 {
		t.Errorf("scheduler updated %d pods, want none", len(f.updates))
	}
}
