package controllers

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// rsPod is a pod named name created at t0+age seconds, on node (""
// unscheduled), in phase, ready or not since readyAt.
func rsPod(name string, created int, node, phase string, ready bool) *skiffv1.Pod {
	st := "False"
	if ready {
		st = "True"
	}
	return &skiffv1.Pod{
		Metadata: &skiffv1.ObjectMeta{Name: name, CreationTimestamp: timestamppb.New(t0.Add(time.Duration(created) * time.Second))},
		Spec:     &skiffv1.PodSpec{NodeName: node},
		Status: &skiffv1.PodStatus{Phase: phase, Conditions: []*skiffv1.Condition{
			{Type: "Ready", Status: st, LastTransitionTime: timestamppb.New(t0.Add(time.Duration(created+1) * time.Second))},
		}},
	}
}

func TestPlanReplicas(t *testing.T) {
	ready := func(name string, created int) *skiffv1.Pod { return rsPod(name, created, "n1", "Running", true) }
	tests := []struct {
		name     string
		replicas int32
		owned    []*skiffv1.Pod
		creating []string
		deleting []string
		create   int
		remove   []string
	}{
		{name: "none yet", replicas: 3, create: 3},
		{name: "in flight creates count", replicas: 3, creating: []string{"a", "b"}, create: 1},
		{name: "a create seen counts once", replicas: 3, owned: []*skiffv1.Pod{ready("a", 0)}, creating: []string{"a", "b"}, create: 1},
		{name: "enough", replicas: 2, owned: []*skiffv1.Pod{ready("a", 0), ready("b", 1)}},
		{name: "deleting ones do not count", replicas: 2, owned: []*skiffv1.Pod{ready("a", 0), ready("b", 1)}, deleting: []string{"b"}, create: 1},
		{name: "deleting ones are not deleted twice", replicas: 1, owned: []*skiffv1.Pod{ready("a", 0), ready("b", 1), ready("c", 2)}, deleting: []string{"c"}, remove: []string{"b"}},
		{
			name: "scale down order", replicas: 1,
			owned: []*skiffv1.Pod{
				ready("old-ready", 0), ready("new-ready", 5),
				rsPod("not-ready", 1, "n1", "Running", false),
				rsPod("pending", 2, "n1", "Pending", false),
				rsPod("unscheduled", 3, "", "Pending", false),
			},
			remove: []string{"unscheduled", "pending", "not-ready", "new-ready"},
		},
		{name: "too many by watch lag", replicas: 0, owned: []*skiffv1.Pod{ready("a", 0)}, creating: []string{"b"}, remove: []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set := func(names []string) map[string]bool {
				m := map[string]bool{}
				for _, n := range names {
					m[n] = true
				}
				return m
			}
			p := planReplicas(tt.replicas, tt.owned, set(tt.creating), set(tt.deleting))
			var removed []string
			for _, r := range p.remove {
				removed = append(removed, r.GetMetadata().GetName())
			}
			if p.create != tt.create || len(removed) != len(tt.remove) {
				t.Fatalf("create %d, remove %v; want create %d, remove %v", p.create, removed, tt.create, tt.remove)
			}
			for i := range removed {
				if removed[i] != tt.remove[i] {
					t.Fatalf("remove %v, want %v", removed, tt.remove)
				}
			}
		})
	}
}

func TestRSStatus(t *testing.T) {
	rs := &skiffv1.ReplicaSet{
		Metadata: &skiffv1.ObjectMeta{Generation: 4},
		Spec: &skiffv1.ReplicaSetSpec{Replicas: proto.Int32(3), MinReadySeconds: 10, Template: &skiffv1.PodTemplateSpec{
			Metadata: &skiffv1.ObjectMeta{Labels: map[string]string{"app": "x"}},
		}},
	}
	long := rsPod("long", 0, "n", "Running", true)     // ready since t0+1s
	recent := rsPod("recent", 5, "n", "Running", true) // ready since t0+6s
	notReady := rsPod("no", 0, "n", "Running", false)
	long.Metadata.Labels = map[string]string{"app": "x"}
	st, wait := rsStatus(rs, []*skiffv1.Pod{long, recent, notReady}, t0.Add(12*time.Second))
	if st.GetReplicas() != 3 || st.GetReadyReplicas() != 2 || st.GetAvailableReplicas() != 1 || st.GetFullyLabeledReplicas() != 1 || st.GetObservedGeneration() != 4 {
		t.Errorf("status %v", st)
	}
	if wait != 4*time.Second {
		t.Errorf("wait %v, want 4s (recent becomes available at t0+16s)", wait)
	}
}

func TestPodName(t *testing.T) {
	rs := &skiffv1.ReplicaSet{Metadata: &skiffv1.ObjectMeta{Name: "web-7d4b9c8f5", Uid: "u1"}}
	n := podName(rs, 0)
	if len(n) != len("web-7d4b9c8f5-")+5 || n[:len("web-7d4b9c8f5-")] != "web-7d4b9c8f5-" {
		t.Errorf("podName = %q", n)
	}
	if podName(rs, 0) != n || podName(rs, 1) == n {
		t.Errorf("podName is not one name per slot: %q %q %q", n, podName(rs, 0), podName(rs, 1))
	}
	other := &skiffv1.ReplicaSet{Metadata: &skiffv1.ObjectMeta{Name: "web-7d4b9c8f5", Uid: "u2"}}
	if podName(other, 0) == n {
		t.Errorf("two ReplicaSets of one name (an earlier one) share slot names")
	}
	long := &skiffv1.ReplicaSet{Metadata: &skiffv1.ObjectMeta{Name: string(make([]byte, 80))}}
	if l := len(podName(long, 0)); l != 63 {
		t.Errorf("a long name's pod name is %d characters, want 63", l)
	}
	taken := map[string]bool{podName(rs, 0): true, podName(rs, 2): true}
	got := freeNames(rs, 2, func(name string) bool { return taken[name] })
	if len(got) != 2 || got[0] != podName(rs, 1) || got[1] != podName(rs, 3) {
		t.Errorf("freeNames = %v, want slots 1 and 3", got)
	}
}
