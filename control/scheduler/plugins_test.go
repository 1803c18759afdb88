package scheduler

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// alloc gives a node an allocatable; an empty amount is left out.
func alloc(cpu, memory, pods string) func(*skiffv1.Node) {
	return func(n *skiffv1.Node) {
		n.Status.Allocatable = map[string]string{}
		for k, v := range map[string]string{"cpu": cpu, "memory": memory, "pods": pods} {
			if v != "" {
				n.Status.Allocatable[k] = v
			}
		}
	}
}

// requesting gives the pod's first container requests; an empty amount is
// left out.
func requesting(p *skiffv1.Pod, cpu, memory string) *skiffv1.Pod {
	r := map[string]string{}
	if cpu != "" {
		r["cpu"] = cpu
	}
	if memory != "" {
		r["memory"] = memory
	}
	p.Spec.Containers[0].Resources = &skiffv1.ResourceRequirements{Requests: r}
	return p
}

func phase(p *skiffv1.Pod, ph string) *skiffv1.Pod {
	p.Status.Phase = ph
	return p
}

// nodeWith is the snapshot of one node with the given pods bound to it.
func nodeWith(n *skiffv1.Node, bound ...*skiffv1.Pod) *nodeInfo {
	for _, p := range bound {
		p.Spec.NodeName = n.Metadata.Name
	}
	return newSnapshot([]*skiffv1.Node{n}, bound)[0]
}

func TestFilters(t *testing.T) {
	clock := func() time.Time { return now }
	tests := []struct {
		name   string
		filter filter
		pod    *skiffv1.Pod
		node   *nodeInfo
		want   []string // reasons; nil: fits
	}{
		{"schedulable", nodeUnschedulable{}, pod("p", "", ""), nodeWith(node("a")), nil},
		{"cordoned", nodeUnschedulable{}, pod("p", "", ""), nodeWith(node("a", func(n *skiffv1.Node) { n.Spec.Unschedulable = true })), []string{"node(s) were unschedulable"}},

		{"ready", nodeReady{now: clock}, pod("p", "", ""), nodeWith(node("a")), nil},
		{"ready false", nodeReady{now: clock}, pod("p", "", ""), nodeWith(node("a", func(n *skiffv1.Node) { n.Status.Conditions[0].Status = "False" })), []string{"node(s) were not ready"}},
		{"heartbeat stale", nodeReady{now: clock}, pod("p", "", ""), nodeWith(node("a", func(n *skiffv1.Node) {
			n.Status.Conditions[0].LastHeartbeatTime = timestamppb.New(now.Add(-HeartbeatGrace))
		})), []string{"node(s) were not ready"}},
		{"no conditions", nodeReady{now: clock}, pod("p", "", ""), nodeWith(node("a", func(n *skiffv1.Node) { n.Status.Conditions = nil })), []string{"node(s) were not ready"}},

		{"no runtime class: any node", runtimeClass{}, pod("p", "", ""), nodeWith(node("a")), nil},
		{"runtime offered", runtimeClass{}, pod("p", "", "wasm"), nodeWith(node("a")), nil},
		{"runtime not offered", runtimeClass{}, pod("p", "", "runc"), nodeWith(node("a")), []string{`node(s) did not offer runtime "runc"`}},
		// A name without a bit (past 64 names) is looked for in the list.
		{"runtime offered, no bit", runtimeFilter{want: "wasm"}, pod("p", "", "wasm"), nodeWith(node("a")), nil},
		{"runtime not offered, no bit", runtimeFilter{want: "runc"}, pod("p", "", "runc"), nodeWith(node("a")), []string{`node(s) did not offer runtime "runc"`}},

		{"fits", resourceFit{}, requesting(pod("p", "", ""), "500m", "1Gi"), nodeWith(node("a", alloc("1", "2Gi", "110")), requesting(pod("x", "", ""), "500m", "1Gi")), nil},
		{"cpu short", resourceFit{}, requesting(pod("p", "", ""), "600m", ""), nodeWith(node("a", alloc("1", "2Gi", "110")), requesting(pod("x", "", ""), "500m", "")), []string{"Insufficient cpu"}},
		{"memory short", resourceFit{}, requesting(pod("p", "", ""), "", "1536Mi"), nodeWith(node("a", alloc("1", "2Gi", "110")), requesting(pod("x", "", ""), "", "513Mi")), []string{"Insufficient memory"}},
		{"both short", resourceFit{}, requesting(pod("p", "", ""), "2", "3Gi"), nodeWith(node("a", alloc("1", "2Gi", "110"))), []string{"Insufficient cpu", "Insufficient memory"}},
		{"too many pods", resourceFit{}, pod("p", "", ""), nodeWith(node("a", alloc("", "", "2")), pod("x", "", ""), pod("y", "", "")), []string{"Too many pods"}},
		{"finished pods hold nothing", resourceFit{}, requesting(pod("p", "", ""), "1", ""), nodeWith(node("a", alloc("1", "", "1")),
			phase(requesting(pod("x", "", ""), "1", ""), "Succeeded"), phase(requesting(pod("y", "", ""), "1", ""), "Failed")), nil},
		{"no requests fit a full node", resourceFit{}, pod("p", "", ""), nodeWith(node("a", alloc("1", "1Gi", "110")), requesting(pod("x", "", ""), "1", "1Gi")), nil},
		{"limit is the request", resourceFit{}, func() *skiffv1.Pod {
			p := pod("p", "", "")
			p.Spec.Containers[0].Resources = &skiffv1.ResourceRequirements{Limits: map[string]string{"cpu": "2"}}
			return p
		}(), nodeWith(node("a", alloc("1", "", ""))), []string{"Insufficient cpu"}},
		{"unreported resources are not checked", resourceFit{}, requesting(pod("p", "", ""), "64", "1Ti"), nodeWith(node("a")), nil},
		{"capacity stands in for allocatable", resourceFit{}, requesting(pod("p", "", ""), "2", ""), nodeWith(node("a", func(n *skiffv1.Node) {
			n.Status.Capacity = map[string]string{"cpu": "1"}
		})), []string{"Insufficient cpu"}},
	}
	for _, tt := range tests {
		t.Run(tt.filter.Name()+"/"+tt.name, func(t *testing.T) {
			st := tt.filter.Filter(newPodInfo(tt.pod), tt.node)
			var got []string
			if st != nil {
				got = st.reasons
			}
			if !slices.Equal(got, tt.want) || (st == nil) != (tt.want == nil) {
				t.Errorf("Filter = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestScorers(t *testing.T) {
	big := alloc("4", "8Gi", "110")
	tests := []struct {
		name            string
		pod             *skiffv1.Pod
		node            *nodeInfo
		least, balanced int64
	}{
		// cpu (4000-2000)/4000 = 50, memory (8-4)/8 = 50; fractions equal.
		{"half used, even", requesting(pod("p", "", ""), "1", "2Gi"), nodeWith(node("a", big), requesting(pod("x", "", ""), "1", "2Gi")), 50, 100},
		// cpu 1000/4000 = 25, memory 7/8 = 87; fractions .75 and .125:
		// deviation .3125.
		{"cpu heavy", requesting(pod("p", "", ""), "3", "1Gi"), nodeWith(node("a", big)), 56, 68},
		// No requests: 100m and 200Mi count for the least-allocated score
		// (cpu 90, memory 80), nothing for the balanced one.
		{"no requests", pod("p", "", ""), nodeWith(node("a", alloc("1", "1000Mi", ""))), 85, 100},
		// Over-committed cpu scores 0 (1500m + 100m of 1); memory 200Mi
		// (x's default) + 1Gi of 2Gi is 40. The cpu fraction stops at 1,
		// memory's is .5.
		{"over", requesting(pod("p", "", ""), "", "1Gi"), nodeWith(node("a", alloc("1", "2Gi", "")), requesting(pod("x", "", ""), "1500m", "")), 20, 75},
		{"nothing reported", requesting(pod("p", "", ""), "1", "1Gi"), nodeWith(node("a")), 0, 100},
		// Init containers: the largest of them, when more than the sum of
		// the containers.
		{"init container", func() *skiffv1.Pod {
			p := requesting(pod("p", "", ""), "1", "1Gi")
			p.Spec.InitContainers = []*skiffv1.Container{{Name: "i", Resources: &skiffv1.ResourceRequirements{Requests: map[string]string{"cpu": "3"}}}}
			return p
		}(), nodeWith(node("a", big)), 56, 68},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPodInfo(tt.pod)
			if got := (leastAllocated{}).Score(p, tt.node); got != tt.least {
				t.Errorf("LeastAllocated = %d, want %d", got, tt.least)
			}
			if got := (balancedAllocation{}).Score(p, tt.node); got != tt.balanced {
				t.Errorf("BalancedAllocation = %d, want %d", got, tt.balanced)
			}
		})
	}
}

func TestUnschedulableMessage(t *testing.T) {
	got := unschedulableMessage(5, map[string]int{`node(s) did not offer runtime "runc"`: 2, "Insufficient memory": 3, "Insufficient cpu": 2})
	want := `0/5 nodes are available: 3 Insufficient memory, 2 Insufficient cpu, 2 node(s) did not offer runtime "runc".`
	if got != want {
		t.Errorf("message\n got %s\nwant %s", got, want)
	}
}

// TestPassPlacesByCapacity: a pass places pods where they fit across nodes
// of different shapes, counting what it bound earlier in the same pass,
// and says why the last one fits nowhere.
func TestPassPlacesByCapacity(t *testing.T) {
	var pods []*skiffv1.Pod
	for _, name := range []string{"p1", "p2", "p3", "p4", "p5"} {
		pods = append(pods, requesting(pod(name, "", ""), "1", "1Gi"))
	}
	nodes := []*skiffv1.Node{
		node("a", alloc("2", "4Gi", "110")),
		node("b", alloc("1", "8Gi", "110")),
		node("c", alloc("4", "1Gi", "110")),
	}
	f, s := newFake(pods, nodes)
	if err := s.Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	// p1 and p2 to a, which scores best while it has room; then b and c
	// tie (99), b first by name; then only c has cpu; then nobody.
	want := map[string]string{"p1": "a", "p2": "a", "p3": "b", "p4": "c", "p5": ""}
	for _, p := range f.pods {
		if p.Spec.NodeName != want[p.Metadata.Name] {
			t.Errorf("%s bound to %q, want %q", p.Metadata.Name, p.Spec.NodeName, want[p.Metadata.Name])
		}
	}
	msg := `0/3 nodes are available: 2 Insufficient cpu, 1 Insufficient memory.`
	if c := podScheduled(f.pods[4]); c == nil || c.Status != "False" || c.Message != msg {
		t.Errorf("p5 PodScheduled = %v, want False with %q", c, msg)
	}

	// Once p1 has finished, the next pass puts p5 on a.
	f.pods[0].Status.Phase = "Succeeded"
	if err := s.Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := f.pods[4].Spec.NodeName; got != "a" {
		t.Errorf("after p1 finished, p5 bound to %q, want a", got)
	}
}

// TestPassCountsPods: a node that takes two pods gets two, and the third
// waits with "Too many pods".
func TestPassCountsPods(t *testing.T) {
	f, s := newFake([]*skiffv1.Pod{pod("p1", "", ""), pod("p2", "", ""), pod("p3", "", "")}, []*skiffv1.Node{node("a", alloc("", "", "2"))})
	if err := s.Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range f.pods {
		got = append(got, p.Spec.NodeName)
	}
	if !slices.Equal(got, []string{"a", "a", ""}) {
		t.Errorf("bound to %q, want a, a and none", got)
	}
	msg := "0/1 nodes are available: 1 Too many pods."
	if c := podScheduled(f.pods[2]); c == nil || c.Message != msg {
		t.Errorf("p3 PodScheduled = %v, want %q", c, msg)
	}
}

func podScheduled(p *skiffv1.Pod) *skiffv1.Condition {
	for _, c := range p.GetStatus().GetConditions() {
		if c.Type == "PodScheduled" {
			return c
		}
	}
	return nil
}

// BenchmarkPlace is one pod's filter and score over 5,000 nodes.
func BenchmarkPlace(b *testing.B) {
	nodes := make([]*skiffv1.Node, 5000)
	for i := range nodes {
		nodes[i] = node(fmt.Sprintf("n%04d", i), alloc("4", "8Gi", "110"))
	}
	snap := newSnapshot(nodes, nil)
	pr := defaultProfile(func() time.Time { return now })
	p := newPodInfo(requesting(pod("p", "", ""), "100m", "64Mi"))
	b.ResetTimer()
	for range b.N {
		if n, _ := pr.place(p, snap); n == nil {
			b.Fatal("no node")
		}
	}
}

// BenchmarkPlaceDecoded is BenchmarkPlace over nodes as the scheduler's
// watch has them: each decoded from its wire form, with ten pods decoded
// between one node and the next, so that the nodes lie scattered over the
// heap as a long-running server's do.
func BenchmarkPlaceDecoded(b *testing.B) {
	wire := func(m proto.Message) []byte {
		out, err := proto.Marshal(m)
		if err != nil {
			b.Fatal(err)
		}
		return out
	}
	podWire := wire(on("n0000", requesting(podWith("x", nil, "app", "web"), "10m", "16Mi")))
	nodes := make([]*skiffv1.Node, 5000)
	var keep []*skiffv1.Pod
	for i := range nodes {
		nodes[i] = new(skiffv1.Node)
		if err := proto.Unmarshal(wire(node(fmt.Sprintf("n%04d", i), alloc("64", "256Gi", "110"))), nodes[i]); err != nil {
			b.Fatal(err)
		}
		for range 10 {
			p := new(skiffv1.Pod)
			if err := proto.Unmarshal(podWire, p); err != nil {
				b.Fatal(err)
			}
			keep = append(keep, p)
		}
	}
	snap := newSnapshot(nodes, nil)
	pr := defaultProfile(func() time.Time { return now })
	pr.next = new(int)
	p := newPodInfo(requesting(pod("p", "", "wasm"), "10m", "16Mi"))
	b.ResetTimer()
	for range b.N {
		if n, _ := pr.place(p, snap); n == nil {
			b.Fatal("no node")
		}
	}
	runtime.KeepAlive(keep)
}
