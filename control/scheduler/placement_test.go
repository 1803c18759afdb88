package scheduler

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// labelled gives a node labels, as key, value pairs.
func labelled(kv ...string) func(*skiffv1.Node) {
	return func(n *skiffv1.Node) {
		if n.Metadata.Labels == nil {
			n.Metadata.Labels = map[string]string{}
		}
		for i := 0; i < len(kv); i += 2 {
			n.Metadata.Labels[kv[i]] = kv[i+1]
		}
	}
}

// tainted gives a node a taint.
func tainted(key, value, effect string) func(*skiffv1.Node) {
	return func(n *skiffv1.Node) {
		n.Spec.Taints = append(n.Spec.Taints, &skiffv1.Taint{Key: key, Value: value, Effect: effect})
	}
}

// podWith is a pod with labels (key, value pairs) and its spec changed by
// set.
func podWith(name string, set func(*skiffv1.PodSpec), kv ...string) *skiffv1.Pod {
	p := pod(name, "", "")
	p.Metadata.Labels = map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		p.Metadata.Labels[kv[i]] = kv[i+1]
	}
	if set != nil {
		set(p.Spec)
	}
	return p
}

// on binds a pod to a node.
func on(nodeName string, p *skiffv1.Pod) *skiffv1.Pod {
	p.Spec.NodeName = nodeName
	return p
}

func sel(kv ...string) *skiffv1.LabelSelector {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &skiffv1.LabelSelector{MatchLabels: m}
}

func nodeAff(terms ...*skiffv1.NodeSelectorTerm) func(*skiffv1.PodSpec) {
	return func(s *skiffv1.PodSpec) {
		s.Affinity = &skiffv1.Affinity{NodeAffinity: &skiffv1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &skiffv1.NodeSelector{NodeSelectorTerms: terms}}}
	}
}

func expr(key, op string, values ...string) *skiffv1.NodeSelectorRequirement {
	return &skiffv1.NodeSelectorRequirement{Key: key, Operator: op, Values: values}
}

func term(exprs ...*skiffv1.NodeSelectorRequirement) *skiffv1.NodeSelectorTerm {
	return &skiffv1.NodeSelectorTerm{MatchExpressions: exprs}
}

func tolerate(ts ...*skiffv1.Toleration) func(*skiffv1.PodSpec) {
	return func(s *skiffv1.PodSpec) { s.Tolerations = ts }
}

func antiAff(key string, s *skiffv1.LabelSelector) func(*skiffv1.PodSpec) {
	return func(spec *skiffv1.PodSpec) {
		spec.Affinity = &skiffv1.Affinity{PodAntiAffinity: &skiffv1.PodAntiAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: []*skiffv1.PodAffinityTerm{{LabelSelector: s, TopologyKey: key}},
		}}
	}
}

func spread(maxSkew int32, key, when string, s *skiffv1.LabelSelector) func(*skiffv1.PodSpec) {
	return func(spec *skiffv1.PodSpec) {
		spec.TopologySpreadConstraints = append(spec.TopologySpreadConstraints, &skiffv1.TopologySpreadConstraint{MaxSkew: maxSkew, TopologyKey: key, WhenUnsatisfiable: when, LabelSelector: s})
	}
}

func both(fs ...func(*skiffv1.PodSpec)) func(*skiffv1.PodSpec) {
	return func(s *skiffv1.PodSpec) {
		for _, f := range fs {
			f(s)
		}
	}
}

// filterEach runs one filter plugin, with its pre-filter, for the pod on
// every node of the snapshot: node name to the first reason, "" when it
// fits.
func filterEach(f filter, p *skiffv1.Pod, snap []*nodeInfo) map[string]string {
	pi := newPodInfo(p)
	if pf, ok := f.(preFilter); ok {
		f = pf.PreFilter(pi, snap)
	}
	out := map[string]string{}
	for _, n := range snap {
		out[n.name()] = ""
		if f == nil {
			continue
		}
		if st := f.Filter(pi, n); st != nil {
			out[n.name()] = st.reasons[0]
		}
	}
	return out
}

// scoreEach runs one scorer plugin, with its pre-score and normalisation,
// over every node of the snapshot as the feasible ones.
func scoreEach(s scorer, p *skiffv1.Pod, snap []*nodeInfo) map[string]int64 {
	pi := newPodInfo(p)
	if ps, ok := s.(preScorer); ok {
		s = ps.PreScore(pi, snap, snap)
	}
	out := map[string]int64{}
	scores := make([]int64, len(snap))
	if s != nil {
		for i, n := range snap {
			scores[i] = s.Score(pi, n)
		}
		if nz, ok := s.(normalizer); ok {
			nz.Normalize(scores)
		}
	}
	for i, n := range snap {
		out[n.name()] = scores[i]
	}
	return out
}

func TestPlacementFilters(t *testing.T) {
	const (
		affinity = "node(s) didn't match Pod's node affinity/selector"
		gpuTaint = "node(s) had untolerated taint {dedicated: gpu}"
	)
	zones := []*skiffv1.Node{
		node("a", labelled("zone", "z1", "disk", "ssd", "cores", "8")),
		node("b", labelled("zone", "z1", "cores", "2")),
		node("c", labelled("zone", "z2", "disk", "hdd")),
	}
	gpu := tainted("dedicated", "gpu", "NoSchedule")
	tests := []struct {
		name   string
		filter filter
		nodes  []*skiffv1.Node
		bound  []*skiffv1.Pod
		pod    *skiffv1.Pod
		want   map[string]string
	}{
		{"no rules: every node", nodeAffinity{}, zones, nil, podWith("p", nil), map[string]string{"a": "", "b": "", "c": ""}},
		{"nodeSelector", nodeAffinity{}, zones, nil, podWith("p", func(s *skiffv1.PodSpec) { s.NodeSelector = map[string]string{"zone": "z1", "disk": "ssd"} }),
			map[string]string{"a": "", "b": affinity, "c": affinity}},
		{"In", nodeAffinity{}, zones, nil, podWith("p", nodeAff(term(expr("zone", "In", "z2", "z9")))), map[string]string{"a": affinity, "b": affinity, "c": ""}},
		{"NotIn holds without the label", nodeAffinity{}, zones, nil, podWith("p", nodeAff(term(expr("disk", "NotIn", "ssd")))), map[string]string{"a": affinity, "b": "", "c": ""}},
		{"Exists", nodeAffinity{}, zones, nil, podWith("p", nodeAff(term(expr("disk", "Exists")))), map[string]string{"a": "", "b": affinity, "c": ""}},
		{"DoesNotExist", nodeAffinity{}, zones, nil, podWith("p", nodeAff(term(expr("disk", "DoesNotExist")))), map[string]string{"a": affinity, "b": "", "c": affinity}},
		{"Gt", nodeAffinity{}, zones, nil, podWith("p", nodeAff(term(expr("cores", "Gt", "4")))), map[string]string{"a": "", "b": affinity, "c": affinity}},
		{"Lt", nodeAffinity{}, zones, nil, podWith("p", nodeAff(term(expr("cores", "Lt", "4")))), map[string]string{"a": affinity, "b": "", "c": affinity}},
		{"terms are ORed, expressions ANDed", nodeAffinity{}, zones, nil, podWith("p", nodeAff(
			term(expr("zone", "In", "z1"), expr("disk", "Exists")),
			term(expr("zone", "In", "z2")))), map[string]string{"a": "", "b": affinity, "c": ""}},
		{"matchFields metadata.name", nodeAffinity{}, zones, nil, podWith("p", nodeAff(&skiffv1.NodeSelectorTerm{MatchFields: []*skiffv1.NodeSelectorRequirement{expr("metadata.name", "In", "b")}})),
			map[string]string{"a": affinity, "b": "", "c": affinity}},
		{"empty term picks nothing", nodeAffinity{}, zones, nil, podWith("p", nodeAff(&skiffv1.NodeSelectorTerm{})), map[string]string{"a": affinity, "b": affinity, "c": affinity}},
		{"selector and affinity both hold", nodeAffinity{}, zones, nil, podWith("p", both(nodeAff(term(expr("zone", "In", "z1"))), func(s *skiffv1.PodSpec) {
			s.NodeSelector = map[string]string{"cores": "2"}
		})), map[string]string{"a": affinity, "b": "", "c": affinity}},

		{"untolerated NoSchedule", taintToleration{}, []*skiffv1.Node{node("a", gpu), node("b")}, nil, podWith("p", nil), map[string]string{"a": gpuTaint, "b": ""}},
		{"untolerated NoExecute", taintToleration{}, []*skiffv1.Node{node("a", tainted("k", "", "NoExecute"))}, nil, podWith("p", nil), map[string]string{"a": "node(s) had untolerated taint {k: }"}},
		{"PreferNoSchedule does not filter", taintToleration{}, []*skiffv1.Node{node("a", tainted("k", "v", "PreferNoSchedule"))}, nil, podWith("p", nil), map[string]string{"a": ""}},
		{"Equal toleration", taintToleration{}, []*skiffv1.Node{node("a", gpu)}, nil,
			podWith("p", tolerate(&skiffv1.Toleration{Key: "dedicated", Value: "gpu", Effect: "NoSchedule"})), map[string]string{"a": ""}},
		{"wrong value", taintToleration{}, []*skiffv1.Node{node("a", gpu)}, nil,
			podWith("p", tolerate(&skiffv1.Toleration{Key: "dedicated", Operator: "Equal", Value: "tpu"})), map[string]string{"a": gpuTaint}},
		{"wrong effect", taintToleration{}, []*skiffv1.Node{node("a", gpu)}, nil,
			podWith("p", tolerate(&skiffv1.Toleration{Key: "dedicated", Operator: "Exists", Effect: "NoExecute"})), map[string]string{"a": gpuTaint}},
		{"Exists with no key tolerates all", taintToleration{}, []*skiffv1.Node{node("a", gpu, tainted("x", "y", "NoExecute"))}, nil,
			podWith("p", tolerate(&skiffv1.Toleration{Operator: "Exists"})), map[string]string{"a": ""}},
		{"first untolerated is named", taintToleration{}, []*skiffv1.Node{node("a", gpu, tainted("x", "y", "NoExecute"))}, nil,
			podWith("p", tolerate(&skiffv1.Toleration{Key: "dedicated", Operator: "Exists"})), map[string]string{"a": "node(s) had untolerated taint {x: y}"}},

		{"cordoned", nodeUnschedulable{}, []*skiffv1.Node{node("a", func(n *skiffv1.Node) { n.Spec.Unschedulable = true })}, nil, podWith("p", nil),
			map[string]string{"a": "node(s) were unschedulable"}},
		{"cordoned but tolerated", nodeUnschedulable{}, []*skiffv1.Node{node("a", func(n *skiffv1.Node) { n.Spec.Unschedulable = true })}, nil,
			podWith("p", tolerate(&skiffv1.Toleration{Key: "node.kubernetes.io/unschedulable", Operator: "Exists", Effect: "NoSchedule"})), map[string]string{"a": ""}},

		{"anti-affinity by hostname without the label", interPodAntiAffinity{}, []*skiffv1.Node{node("a"), node("b")},
			[]*skiffv1.Pod{on("a", podWith("x", nil, "app", "web"))},
			podWith("p", antiAff(hostnameLabel, sel("app", "web")), "app", "web"),
			map[string]string{"a": "node(s) didn't match pod anti-affinity rules", "b": ""}},
		{"anti-affinity by zone", interPodAntiAffinity{}, zones,
			[]*skiffv1.Pod{on("b", podWith("x", nil, "app", "web"))},
			podWith("p", antiAff("zone", sel("app", "web"))),
			map[string]string{"a": "node(s) didn't match pod anti-affinity rules", "b": "node(s) didn't match pod anti-affinity rules", "c": ""}},
		{"anti-affinity looks in the pod's namespace only", interPodAntiAffinity{}, []*skiffv1.Node{node("a")},
			[]*skiffv1.Pod{on("a", func() *skiffv1.Pod { p := podWith("x", nil, "app", "web"); p.Metadata.Namespace = "other"; return p }())},
			podWith("p", antiAff(hostnameLabel, sel("app", "web"))), map[string]string{"a": ""}},
		{"anti-affinity ignores a node without the key", interPodAntiAffinity{}, zones[:2],
			[]*skiffv1.Pod{on("a", podWith("x", nil, "app", "web"))},
			podWith("p", antiAff("disk", sel("app", "web"))), map[string]string{"a": "node(s) didn't match pod anti-affinity rules", "b": ""}},
		{"existing pod's anti-affinity holds both ways", interPodAntiAffinity{}, []*skiffv1.Node{node("a"), node("b")},
			[]*skiffv1.Pod{on("a", podWith("x", antiAff(hostnameLabel, sel("app", "web"))))},
			podWith("p", nil, "app", "web"),
			map[string]string{"a": "node(s) didn't satisfy existing pods anti-affinity rules", "b": ""}},
		{"finished pods keep nothing away", interPodAntiAffinity{}, []*skiffv1.Node{node("a")},
			[]*skiffv1.Pod{phase(on("a", podWith("x", nil, "app", "web")), "Succeeded")},
			podWith("p", antiAff(hostnameLabel, sel("app", "web"))), map[string]string{"a": ""}},

		// a, b in z1 have 2 and 0 web pods; c in z2 has 0: by zone, z1
		// has 2, z2 0.
		{"spread by zone", podTopologySpread{}, zones,
			[]*skiffv1.Pod{on("a", podWith("x", nil, "app", "web")), on("a", podWith("y", nil, "app", "web"))},
			podWith("p", spread(1, "zone", "DoNotSchedule", sel("app", "web")), "app", "web"),
			map[string]string{"a": "node(s) didn't match pod topology spread constraints", "b": "node(s) didn't match pod topology spread constraints", "c": ""}},
		{"spread within skew", podTopologySpread{}, zones,
			[]*skiffv1.Pod{on("a", podWith("x", nil, "app", "web"))},
			podWith("p", spread(2, "zone", "DoNotSchedule", sel("app", "web")), "app", "web"),
			map[string]string{"a": "", "b": "", "c": ""}},
		{"spread by hostname without the label", podTopologySpread{}, zones,
			[]*skiffv1.Pod{on("a", podWith("x", nil, "app", "web"))},
			podWith("p", spread(1, hostnameLabel, "DoNotSchedule", sel("app", "web")), "app", "web"),
			map[string]string{"a": "node(s) didn't match pod topology spread constraints", "b": "", "c": ""}},
		{"spread needs the key", podTopologySpread{}, zones,
			nil, podWith("p", spread(1, "disk", "DoNotSchedule", sel("app", "web")), "app", "web"),
			map[string]string{"a": "", "b": "node(s) didn't match pod topology spread constraints (missing required label)", "c": ""}},
		// Only z1 nodes count: c's zone is no domain, so z1 is the minimum.
		{"spread counts the nodes the pod may go to", podTopologySpread{}, zones,
			[]*skiffv1.Pod{on("a", podWith("x", nil, "app", "web"))},
			podWith("p", both(spread(1, "zone", "DoNotSchedule", sel("app", "web")), func(s *skiffv1.PodSpec) { s.NodeSelector = map[string]string{"zone": "z1"} }), "app", "web"),
			map[string]string{"a": "", "b": "", "c": ""}},
		{"spread counts the pod's namespace", podTopologySpread{}, zones,
			[]*skiffv1.Pod{on("a", func() *skiffv1.Pod { p := podWith("x", nil, "app", "web"); p.Metadata.Namespace = "other"; return p }())},
			podWith("p", spread(1, hostnameLabel, "DoNotSchedule", sel("app", "web")), "app", "web"),
			map[string]string{"a": "", "b": "", "c": ""}},
		{"ScheduleAnyway does not filter", podTopologySpread{}, zones,
			[]*skiffv1.Pod{on("a", podWith("x", nil, "app", "web")), on("a", podWith("y", nil, "app", "web"))},
			podWith("p", spread(1, "zone", "ScheduleAnyway", sel("app", "web")), "app", "web"),
			map[string]string{"a": "", "b": "", "c": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.filter.Name()+"/"+tt.name, func(t *testing.T) {
			got := filterEach(tt.filter, tt.pod, newSnapshot(tt.nodes, tt.bound))
			if !maps.Equal(got, tt.want) {
				t.Errorf("Filter = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPlacementScores(t *testing.T) {
	zones := []*skiffv1.Node{
		node("a", labelled("zone", "z1", "disk", "ssd")),
		node("b", labelled("zone", "z1")),
		node("c", labelled("zone", "z2", "disk", "hdd")),
	}
	preferred := func(ts ...*skiffv1.PreferredSchedulingTerm) func(*skiffv1.PodSpec) {
		return func(s *skiffv1.PodSpec) {
			s.Affinity = &skiffv1.Affinity{NodeAffinity: &skiffv1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: ts}}
		}
	}
	preferAway := func(w int32, key string, s *skiffv1.LabelSelector) func(*skiffv1.PodSpec) {
		return func(spec *skiffv1.PodSpec) {
			spec.Affinity = &skiffv1.Affinity{PodAntiAffinity: &skiffv1.PodAntiAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []*skiffv1.WeightedPodAffinityTerm{
				{Weight: w, PodAffinityTerm: &skiffv1.PodAffinityTerm{LabelSelector: s, TopologyKey: key}},
			}}}
		}
	}
	tests := []struct {
		name   string
		scorer scorer
		nodes  []*skiffv1.Node
		bound  []*skiffv1.Pod
		pod    *skiffv1.Pod
		want   map[string]int64
	}{
		// a matches both (80+20), c the first (20): 100 and 20.
		{"preferred node affinity", nodeAffinity{}, zones, nil, podWith("p", preferred(
			&skiffv1.PreferredSchedulingTerm{Weight: 20, Preference: term(expr("disk", "Exists"))},
			&skiffv1.PreferredSchedulingTerm{Weight: 80, Preference: term(expr("disk", "In", "ssd"))})),
			map[string]int64{"a": 100, "b": 0, "c": 20}},
		{"no preferences", nodeAffinity{}, zones, nil, podWith("p", nil), map[string]int64{"a": 0, "b": 0, "c": 0}},

		// a has two untolerated PreferNoSchedule taints, b one (the other
		// tolerated), c none.
		{"taint toleration", taintToleration{}, []*skiffv1.Node{
			node("a", tainted("k1", "", "PreferNoSchedule"), tainted("k2", "", "PreferNoSchedule")),
			node("b", tainted("k1", "", "PreferNoSchedule"), tainted("ok", "", "PreferNoSchedule")),
			node("c", tainted("k3", "", "NoSchedule")),
		}, nil, podWith("p", tolerate(&skiffv1.Toleration{Key: "ok", Operator: "Exists", Effect: "PreferNoSchedule"})),
			map[string]int64{"a": 0, "b": 50, "c": 100}},
		// All would score 100; the plugin is left out instead, which
		// ranks the nodes the same.
		{"no PreferNoSchedule taints", taintToleration{}, zones, nil, podWith("p", nil), map[string]int64{"a": 0, "b": 0, "c": 0}},
		{"every taint tolerated", taintToleration{}, []*skiffv1.Node{node("a", tainted("k", "", "PreferNoSchedule")), node("b")}, nil,
			podWith("p", tolerate(&skiffv1.Toleration{Key: "k", Operator: "Exists"})), map[string]int64{"a": 100, "b": 100}},

		// Two web pods on a, one on b: by hostname -2w, -w, 0.
		{"preferred anti-affinity by hostname", interPodAntiAffinity{}, zones,
			[]*skiffv1.Pod{on("a", podWith("x", nil, "app", "web")), on("a", podWith("y", nil, "app", "web")), on("b", podWith("z", nil, "app", "web"))},
			podWith("p", preferAway(10, hostnameLabel, sel("app", "web"))), map[string]int64{"a": 0, "b": 50, "c": 100}},
		{"preferred anti-affinity by zone", interPodAntiAffinity{}, zones,
			[]*skiffv1.Pod{on("b", podWith("x", nil, "app", "web"))},
			podWith("p", preferAway(10, "zone", sel("app", "web"))), map[string]int64{"a": 0, "b": 0, "c": 100}},
		{"existing pod's preferred anti-affinity", interPodAntiAffinity{}, zones,
			[]*skiffv1.Pod{on("c", podWith("x", preferAway(5, "zone", sel("app", "web"))))},
			podWith("p", nil, "app", "web"), map[string]int64{"a": 100, "b": 100, "c": 0}},

		// By zone: z1 holds 3 web pods, z2 1; weight log(2+2); raw
		// 3*1.386 = 4 and 1*1.386 = 1; 100*(4+1-s)/4.
		{"spread ScheduleAnyway", podTopologySpread{}, zones,
			[]*skiffv1.Pod{on("a", podWith("x", nil, "app", "web")), on("a", podWith("y", nil, "app", "web")), on("b", podWith("z", nil, "app", "web")), on("c", podWith("w", nil, "app", "web"))},
			podWith("p", spread(1, "zone", "ScheduleAnyway", sel("app", "web")), "app", "web"),
			map[string]int64{"a": 25, "b": 25, "c": 100}},
		{"spread ignores nodes without the key", podTopologySpread{}, zones,
			[]*skiffv1.Pod{on("a", podWith("x", nil, "app", "web"))},
			podWith("p", spread(1, "disk", "ScheduleAnyway", sel("app", "web")), "app", "web"),
			map[string]int64{"a": 0, "b": 0, "c": 100}},
	}
	for _, tt := range tests {
		t.Run(tt.scorer.Name()+"/"+tt.name, func(t *testing.T) {
			got := scoreEach(tt.scorer, tt.pod, newSnapshot(tt.nodes, tt.bound))
			if !maps.Equal(got, tt.want) {
				t.Errorf("scores = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestPlaceMessage: the FailedScheduling message counts each node under
// the first filter that turned it down, in kube-scheduler's order.
func TestPlaceMessage(t *testing.T) {
	gpu := tainted("dedicated", "gpu", "NoSchedule")
	nodes := []*skiffv1.Node{
		node("a", alloc("4", "1Gi", "110")), node("b", alloc("4", "1Gi", "110")), node("c", alloc("4", "1Gi", "110")),
		node("d", alloc("4", "8Gi", "110"), gpu), node("e", alloc("1", "1Gi", "110"), gpu),
	}
	p := newPodInfo(requesting(pod("p", "", ""), "", "2Gi"))
	n, msg := defaultProfile(func() time.Time { return now }).place(p, newSnapshot(nodes, nil))
	want := "0/5 nodes are available: 3 Insufficient memory, 2 node(s) had untolerated taint {dedicated: gpu}."
	if n != nil || msg != want {
		t.Errorf("place = %v, %q; want nil, %q", n, msg, want)
	}
}

// TestPassPlacementRules: a pass honours the rules pod after pod, counting
// the pods it placed earlier in the same pass.
func TestPassPlacementRules(t *testing.T) {
	web := func(name string, set func(*skiffv1.PodSpec)) *skiffv1.Pod { return podWith(name, set, "app", "web") }
	zoned := []*skiffv1.Node{node("a", labelled("zone", "z1")), node("b", labelled("zone", "z1")), node("c", labelled("zone", "z2"))}
	tests := []struct {
		name  string
		pods  []*skiffv1.Pod
		nodes []*skiffv1.Node
		want  []string // node of each pod in order; "" = unbound
		msg   string   // of the last pod when unbound
	}{
		{"one per host", []*skiffv1.Pod{
			web("p1", antiAff(hostnameLabel, sel("app", "web"))), web("p2", antiAff(hostnameLabel, sel("app", "web"))),
			web("p3", antiAff(hostnameLabel, sel("app", "web"))), web("p4", antiAff(hostnameLabel, sel("app", "web"))),
		}, zoned, []string{"a", "b", "c", ""}, "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."},
		{"even over zones", []*skiffv1.Pod{
			web("p1", spread(1, "zone", "DoNotSchedule", sel("app", "web"))), web("p2", spread(1, "zone", "DoNotSchedule", sel("app", "web"))),
			web("p3", spread(1, "zone", "DoNotSchedule", sel("app", "web"))), web("p4", spread(1, "zone", "DoNotSchedule", sel("app", "web"))),
		}, zoned, []string{"a", "c", "b", "c"}, ""},
		{"toleration opens the tainted node only to the pod that has it", []*skiffv1.Pod{
			podWith("plain", nil), podWith("gpu", tolerate(&skiffv1.Toleration{Key: "dedicated", Operator: "Exists"})),
		}, []*skiffv1.Node{node("a", tainted("dedicated", "gpu", "NoSchedule"), labelled("gpu", "yes"))}, []string{"", "a"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, s := newFake(tt.pods, tt.nodes)
			if err := s.Pass(context.Background()); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range f.pods {
				got = append(got, p.Spec.NodeName)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("bound to %q, want %q", got, tt.want)
			}
			if tt.msg != "" {
				if c := podScheduled(f.pods[len(f.pods)-1]); c == nil || c.Message != tt.msg {
					t.Errorf("last pod PodScheduled = %v, want %q", c, tt.msg)
				}
			}
		})
	}
}

// BenchmarkPlaceSpread is one pod's placement over 5,000 nodes in 10 zones
// running 20,000 pods of 10 workloads, with a DoNotSchedule spread over
// zones, a ScheduleAnyway spread over hosts and a preferred anti-affinity.
func BenchmarkPlaceSpread(b *testing.B) {
	nodes := make([]*skiffv1.Node, 5000)
	for i := range nodes {
		nodes[i] = node(fmt.Sprintf("n%04d", i), alloc("64", "256Gi", "110"), labelled("zone", fmt.Sprintf("z%d", i%10)))
	}
	var pods []*skiffv1.Pod
	for i := range 20000 {
		pods = append(pods, on(nodes[i%len(nodes)].Metadata.Name, podWith(fmt.Sprintf("x%d", i), nil, "app", fmt.Sprintf("w%d", i%10))))
	}
	snap := newSnapshot(nodes, pods)
	pr := defaultProfile(func() time.Time { return now })
	p := newPodInfo(podWith("p", both(
		spread(1, "zone", "DoNotSchedule", sel("app", "w1")),
		spread(1, hostnameLabel, "ScheduleAnyway", sel("app", "w1")),
		func(s *skiffv1.PodSpec) {
			s.Affinity = &skiffv1.Affinity{PodAntiAffinity: &skiffv1.PodAntiAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []*skiffv1.WeightedPodAffinityTerm{
				{Weight: 10, PodAffinityTerm: &skiffv1.PodAffinityTerm{LabelSelector: sel("app", "w1"), TopologyKey: hostnameLabel}},
			}}}
		}), "app", "w1"))
	b.ResetTimer()
	for range b.N {
		if n, _ := pr.place(p, snap); n == nil {
			b.Fatal("no node")
		}
	}
}

// TestAssumeAndForget: a pod assumed onto a node counts for every plugin
// that counts pods, and forgetting it takes it all back.
func TestAssumeAndForget(t *testing.T) {
	snap := newSnapshot([]*skiffv1.Node{node("a", alloc("1", "1Gi", "2")), node("b", alloc("1", "1Gi", "2"))}, nil)
	placed := newPodInfo(requesting(podWith("x", antiAff(hostnameLabel, sel("app", "db")), "app", "web"), "1", ""))
	web := podWith("p", both(antiAff(hostnameLabel, sel("app", "web")), spread(1, hostnameLabel, "DoNotSchedule", sel("app", "web"))), "app", "web")
	db := podWith("q", nil, "app", "db")
	all := func() map[string]string {
		out := map[string]string{}
		for _, f := range []filter{resourceFit{}, interPodAntiAffinity{}, podTopologySpread{}} {
			for n, why := range filterEach(f, requesting(web, "1", ""), snap) {
				out[f.Name()+" "+n] = why
			}
		}
		for n, why := range filterEach(interPodAntiAffinity{}, db, snap) {
			out["existing "+n] = why
		}
		return out
	}
	before := all()
	snap[0].assume(placed)
	during := all()
	want := map[string]string{
		"NodeResourcesFit a": "Insufficient cpu", "InterPodAffinity a": errAntiAffinity, "PodTopologySpread a": errSpread,
		"existing a": errExistingAntiAffinity,
	}
	for k, v := range want {
		if during[k] != v {
			t.Errorf("after assume, %s: %q, want %q", k, during[k], v)
		}
	}
	snap[0].forget(placed)
	if after := all(); !maps.Equal(after, before) {
		t.Errorf("after forget %q, want as before %q", after, before)
	}
}

// BenchmarkPlaceReplicas places and assumes, one after the other, the
// replicas of one workload over 5,000 nodes in 10 zones, each spread over
// zones (DoNotSchedule) and hosts (ScheduleAnyway), as a pass of a large
// rollout does: the figure is per pod, with the snapshot growing.
func BenchmarkPlaceReplicas(b *testing.B) {
	nodes := make([]*skiffv1.Node, 5000)
	for i := range nodes {
		nodes[i] = node(fmt.Sprintf("n%04d", i), alloc("64", "256Gi", "1000"), labelled("zone", fmt.Sprintf("z%d", i%10)))
	}
	snap := newSnapshot(nodes, nil)
	pr := defaultProfile(func() time.Time { return now })
	p := podWith("p", both(
		spread(1, "zone", "DoNotSchedule", sel("app", "web")),
		spread(1, hostnameLabel, "ScheduleAnyway", sel("app", "web")),
	), "app", "web")
	b.ResetTimer()
	for range b.N {
		pi := newPodInfo(p)
		n, why := pr.place(pi, snap)
		if n == nil {
			b.Fatal(why)
		}
		n.assume(pi)
	}
}

// A node counted afresh in its place (a heartbeat changed it) leaves the
// snapshot's pod index as a new snapshot of the same cluster would be:
// its pods are counted once, under the new nodeInfo, for anti-affinity and
// spread alike.
func TestRefreshNodeKeepsIndex(t *testing.T) {
	nodes := []*skiffv1.Node{node("a", alloc("4", "4Gi", "10")), node("b", alloc("4", "4Gi", "10"))}
	bound := []*skiffv1.Pod{
		on("a", podWith("db-1", antiAff(hostnameLabel, sel("app", "web")), "app", "db")),
		on("a", podWith("web-1", nil, "app", "web")),
		on("b", podWith("web-2", nil, "app", "web")),
	}
	snap := newSnapshot(nodes, bound)
	web := podWith("web-3", both(antiAff(hostnameLabel, sel("app", "db")), spread(1, hostnameLabel, "DoNotSchedule", sel("app", "web"))), "app", "web")
	all := func(snap []*nodeInfo) map[string]string {
		out := map[string]string{}
		for _, f := range []filter{interPodAntiAffinity{}, podTopologySpread{}} {
			for n, why := range filterEach(f, web, snap) {
				out[f.Name()+" "+n] = why
			}
		}
		return out
	}
	want := all(newSnapshot(nodes, bound))
	if len(want) == 0 {
		t.Fatal("the test pod fits everywhere: it tests nothing")
	}

	beat := proto.Clone(nodes[0]).(*skiffv1.Node)
	beat.Status.Allocatable["pods"] = "11"
	snap[0] = refreshNode(snap[0], beat, bound[:2])
	if got := all(snap); !maps.Equal(got, want) {
		t.Errorf("after refresh: %q, want as a new snapshot: %q", got, want)
	}
	if snap[0].requested.pods != 2 || snap[0].allocatable.pods != 11 {
		t.Errorf("refreshed node counts %d pods of %d, want 2 of 11", snap[0].requested.pods, snap[0].allocatable.pods)
	}

	relabelled := proto.Clone(beat).(*skiffv1.Node)
	relabelled.Metadata.Labels = map[string]string{"zone": "z1"}
	tainted := proto.Clone(beat).(*skiffv1.Node)
	tainted.Spec.Taints = []*skiffv1.Taint{{Key: "k", Effect: "NoSchedule"}}
	for _, c := range []struct {
		name string
		n    *skiffv1.Node
		same bool
	}{{"heartbeat", beat, true}, {"labels", relabelled, false}, {"taints", tainted, false}} {
		if got := sameDomains(nodes[0], c.n); got != c.same {
			t.Errorf("sameDomains after a change of %s = %v, want %v", c.name, got, c.same)
		}
	}
}
