package apiserver

import (
	"context"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// TestPlacementValidated: each placement field of a pod is checked as
// Kubernetes checks it, and the error names the field.
func TestPlacementValidated(t *testing.T) {
	pod := func(edit func(*skiffv1.PodSpec)) *skiffv1.Pod {
		p := &skiffv1.Pod{Metadata: &skiffv1.ObjectMeta{Name: "p", Namespace: "default"}, Spec: &skiffv1.PodSpec{
			RestartPolicy: "Always", Containers: []*skiffv1.Container{{Name: "c", Image: "hello"}},
		}}
		edit(p.Spec)
		return p
	}
	nodeAff := func(terms ...*skiffv1.NodeSelectorTerm) func(*skiffv1.PodSpec) {
		return func(s *skiffv1.PodSpec) {
			s.Affinity = &skiffv1.Affinity{NodeAffinity: &skiffv1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &skiffv1.NodeSelector{NodeSelectorTerms: terms}}}
		}
	}
	expr := func(key, op string, values ...string) *skiffv1.NodeSelectorTerm {
		return &skiffv1.NodeSelectorTerm{MatchExpressions: []*skiffv1.NodeSelectorRequirement{{Key: key, Operator: op, Values: values}}}
	}
	anti := func(term *skiffv1.PodAffinityTerm) func(*skiffv1.PodSpec) {
		return func(s *skiffv1.PodSpec) {
			s.Affinity = &skiffv1.Affinity{PodAntiAffinity: &skiffv1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []*skiffv1.PodAffinityTerm{term}}}
		}
	}
	tol := func(t *skiffv1.Toleration) func(*skiffv1.PodSpec) {
		return func(s *skiffv1.PodSpec) { s.Tolerations = []*skiffv1.Toleration{t} }
	}
	spread := func(cs ...*skiffv1.TopologySpreadConstraint) func(*skiffv1.PodSpec) {
		return func(s *skiffv1.PodSpec) { s.TopologySpreadConstraints = cs }
	}
	web := &skiffv1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	for _, tt := range []struct {
		name string
		edit func(*skiffv1.PodSpec)
		want string // "" = valid
	}{
		{"nodeSelector", func(s *skiffv1.PodSpec) {
			s.NodeSelector = map[string]string{"disk": "ssd", "kubernetes.io/hostname": "n1"}
		}, ""},
		{"nodeSelector key", func(s *skiffv1.PodSpec) { s.NodeSelector = map[string]string{"bad key": "x"} }, `spec.nodeSelector: invalid key "bad key"`},
		{"nodeSelector value", func(s *skiffv1.PodSpec) { s.NodeSelector = map[string]string{"disk": "a b"} }, `spec.nodeSelector[disk]: invalid value "a b"`},
		{"every operator", nodeAff(expr("a", "In", "x"), expr("a", "NotIn", "x"), expr("a", "Exists"), expr("a", "DoesNotExist"), expr("a", "Gt", "1"), expr("a", "Lt", "-1")), ""},
		{"no terms", nodeAff(), "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms: required value"},
		{"bad operator", nodeAff(expr("a", "Near", "x")),
			`spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator: unsupported value "Near"`},
		{"In without values", nodeAff(expr("a", "In")), "nodeSelectorTerms[0].matchExpressions[0].values: required value"},
		{"Exists with values", nodeAff(expr("a", "Exists", "x")), "nodeSelectorTerms[0].matchExpressions[0].values: forbidden"},
		{"Gt not a number", nodeAff(expr("a", "Gt", "many")), `nodeSelectorTerms[0].matchExpressions[0].values[0]: invalid value "many"`},
		{"matchFields other than the name", nodeAff(&skiffv1.NodeSelectorTerm{MatchFields: []*skiffv1.NodeSelectorRequirement{{Key: "spec.podCIDR", Operator: "In", Values: []string{"x"}}}}),
			`nodeSelectorTerms[0].matchFields[0].key: unsupported value "spec.podCIDR"`},
		{"matchFields two names", nodeAff(&skiffv1.NodeSelectorTerm{MatchFields: []*skiffv1.NodeSelectorRequirement{{Key: "metadata.name", Operator: "In", Values: []string{"a", "b"}}}}),
			"nodeSelectorTerms[0].matchFields[0].values: required value: must be only one value"},
		{"preferred weight", func(s *skiffv1.PodSpec) {
			s.Affinity = &skiffv1.Affinity{NodeAffinity: &skiffv1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []*skiffv1.PreferredSchedulingTerm{{Weight: 101, Preference: expr("a", "Exists")}}}}
		}, "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight: invalid value 101: must be in the range 1-100"},

		{"anti-affinity", anti(&skiffv1.PodAffinityTerm{LabelSelector: web, TopologyKey: "kubernetes.io/hostname", Namespaces: []string{"default"}}), ""},
		{"anti-affinity without topology key", anti(&skiffv1.PodAffinityTerm{LabelSelector: web}),
			"spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: required value"},
		{"anti-affinity selector operator", anti(&skiffv1.PodAffinityTerm{TopologyKey: "zone", LabelSelector: &skiffv1.LabelSelector{
			MatchExpressions: []*skiffv1.LabelSelectorRequirement{{Key: "app", Operator: "Gt", Values: []string{"1"}}}}}),
			`requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector.matchExpressions[0].operator: unsupported value "Gt"`},
		{"anti-affinity namespace", anti(&skiffv1.PodAffinityTerm{LabelSelector: web, TopologyKey: "zone", Namespaces: []string{"Bad_NS"}}),
			`requiredDuringSchedulingIgnoredDuringExecution[0].namespaces[0]: invalid value "Bad_NS"`},
		{"preferred anti-affinity weight", func(s *skiffv1.PodSpec) {
			s.Affinity = &skiffv1.Affinity{PodAntiAffinity: &skiffv1.PodAntiAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []*skiffv1.WeightedPodAffinityTerm{
				{PodAffinityTerm: &skiffv1.PodAffinityTerm{LabelSelector: web, TopologyKey: "zone"}}}}}
		}, "spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight: invalid value 0"},

		{"tolerations", func(s *skiffv1.PodSpec) {
			s.Tolerations = []*skiffv1.Toleration{
				{Key: "dedicated", Value: "gpu", Effect: "NoSchedule"}, {Operator: "Exists"},
				{Key: "node.kubernetes.io/unreachable", Operator: "Exists", Effect: "NoExecute", TolerationSeconds: proto.Int64(300)},
			}
		}, ""},
		{"toleration operator", tol(&skiffv1.Toleration{Key: "k", Operator: "Equals"}), `spec.tolerations[0].operator: unsupported value "Equals"`},
		{"toleration effect", tol(&skiffv1.Toleration{Key: "k", Effect: "NoRun"}), `spec.tolerations[0].effect: unsupported value "NoRun"`},
		{"empty key needs Exists", tol(&skiffv1.Toleration{Value: "v"}), "spec.tolerations[0].operator: invalid value \"\": operator must be Exists when `key` is empty"},
		{"Exists with a value", tol(&skiffv1.Toleration{Key: "k", Operator: "Exists", Value: "v"}), "spec.tolerations[0].operator: invalid value \"v\": value must be empty"},
		{"seconds need NoExecute", tol(&skiffv1.Toleration{Key: "k", Operator: "Exists", Effect: "NoSchedule", TolerationSeconds: proto.Int64(5)}),
			"spec.tolerations[0].effect: invalid value \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set"},

		{"spread", spread(&skiffv1.TopologySpreadConstraint{MaxSkew: 1, TopologyKey: "zone", WhenUnsatisfiable: "DoNotSchedule", LabelSelector: web}), ""},
		{"spread skew", spread(&skiffv1.TopologySpreadConstraint{TopologyKey: "zone", WhenUnsatisfiable: "DoNotSchedule"}),
			"spec.topologySpreadConstraints[0].maxSkew: invalid value 0: must be greater than zero"},
		{"spread when", spread(&skiffv1.TopologySpreadConstraint{MaxSkew: 1, TopologyKey: "zone", WhenUnsatisfiable: "Never"}),
			`spec.topologySpreadConstraints[0].whenUnsatisfiable: unsupported value "Never"`},
		{"spread key", spread(&skiffv1.TopologySpreadConstraint{MaxSkew: 1, WhenUnsatisfiable: "ScheduleAnyway"}),
			"spec.topologySpreadConstraints[0].topologyKey: required value"},
		{"spread twice", spread(
			&skiffv1.TopologySpreadConstraint{MaxSkew: 1, TopologyKey: "zone", WhenUnsatisfiable: "DoNotSchedule"},
			&skiffv1.TopologySpreadConstraint{MaxSkew: 2, TopologyKey: "zone", WhenUnsatisfiable: "DoNotSchedule"}),
			"spec.topologySpreadConstraints[1]: duplicate value: {zone, DoNotSchedule}"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := validatePod(pod(tt.edit)).err("pod", "p")
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("validate: %v, want valid", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("validate: %v, want %q", err, tt.want)
			}
		})
	}
}

// TestPlacementImmutable: a pod's placement fields cannot change once it
// is created.
func TestPlacementImmutable(t *testing.T) {
	a := newAPI(t)
	p := pod("p")
	p.Spec.NodeSelector = map[string]string{"disk": "ssd"}
	got := a.create(t, p)
	got.Spec.NodeSelector = map[string]string{"disk": "hdd"}
	_, err := a.pods.Update(context.Background(), connect.NewRequest(got))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "pod updates may not change the spec") {
		t.Errorf("Update: %v, want the spec refused", err)
	}
}

// TestTaints: a node's taints are validated, and a NoExecute taint gets
// the time it was added.
func TestTaints(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	for _, tt := range []struct {
		name  string
		taint []*skiffv1.Taint
		want  string
	}{
		{"no key", []*skiffv1.Taint{{Effect: "NoSchedule"}}, "spec.taints[0].key: required value"},
		{"bad key", []*skiffv1.Taint{{Key: "a b", Effect: "NoSchedule"}}, `spec.taints[0].key: invalid value "a b"`},
		{"bad value", []*skiffv1.Taint{{Key: "k", Value: "a b", Effect: "NoSchedule"}}, `spec.taints[0].value: invalid value "a b"`},
		{"no effect", []*skiffv1.Taint{{Key: "k"}}, "spec.taints[0].effect: required value"},
		{"bad effect", []*skiffv1.Taint{{Key: "k", Effect: "NoRun"}}, `spec.taints[0].effect: unsupported value "NoRun"`},
		{"twice", []*skiffv1.Taint{{Key: "k", Effect: "NoSchedule"}, {Key: "k", Value: "v", Effect: "NoSchedule"}},
			"spec.taints[1]: duplicate value: {k, NoSchedule}: taints must be unique by key and effect pair"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := &skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: "bad"}, Spec: &skiffv1.NodeSpec{Taints: tt.taint}}
			_, err := a.nodes.Create(ctx, connect.NewRequest(n))
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Create: %v, want InvalidArgument with %q", err, tt.want)
			}
		})
	}
	n := &skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: "n"}, Spec: &skiffv1.NodeSpec{Taints: []*skiffv1.Taint{
		{Key: "dedicated", Value: "gpu", Effect: "NoSchedule"}, {Key: "gone", Effect: "NoExecute"},
	}}}
	res, err := a.nodes.Create(ctx, connect.NewRequest(n))
	if err != nil {
		t.Fatal(err)
	}
	ts := res.Msg.Spec.Taints
	if ts[0].TimeAdded != nil || ts[1].TimeAdded == nil {
		t.Errorf("taints %v: want time_added on the NoExecute one alone", ts)
	}
	// An update that keeps the taint keeps its time.
	added := ts[1].TimeAdded.AsTime()
	res.Msg.Metadata.Labels = map[string]string{"zone": "z1"}
	res2, err := a.nodes.Update(ctx, connect.NewRequest(res.Msg))
	if err != nil {
		t.Fatal(err)
	}
	if got := res2.Msg.Spec.Taints[1].TimeAdded.AsTime(); !got.Equal(added) {
		t.Errorf("time_added after update %v, want %v", got, added)
	}
}
