package manifest

import (
	"testing"

	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// TestDecodePlacement: a pod's placement fields and a node's taints, as
// written for Kubernetes, read as written.
func TestDecodePlacement(t *testing.T) {
	in := `apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  nodeSelector:
    disktype: ssd
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions:
          - {key: topology.kubernetes.io/zone, operator: In, values: [z1, z2]}
          matchFields:
          - {key: metadata.name, operator: NotIn, values: [n9]}
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 10
        preference:
          matchExpressions:
          - {key: cores, operator: Gt, values: ["4"]}
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - labelSelector:
          matchLabels: {app: web}
        topologyKey: kubernetes.io/hostname
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 50
        podAffinityTerm:
          labelSelector:
            matchExpressions:
            - {key: app, operator: Exists}
          topologyKey: topology.kubernetes.io/zone
          namespaces: [default]
  tolerations:
  - key: dedicated
    operator: Equal
    value: gpu
    effect: NoSchedule
  - key: node.kubernetes.io/unreachable
    operator: Exists
    effect: NoExecute
    tolerationSeconds: 300
  topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: DoNotSchedule
    labelSelector:
      matchLabels: {app: web}
  containers:
  - name: web
    image: web:v1
---
apiVersion: v1
kind: Node
metadata:
  name: n1
  labels: {disktype: ssd}
spec:
  unschedulable: true
  taints:
  - key: dedicated
    value: gpu
    effect: NoSchedule
  - key: node.kubernetes.io/unreachable
    effect: NoExecute
    timeAdded: "2026-11-28T00:00:00Z"
`
	objs, err := Decode("f.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	p := objs[0].Msg.(*skiffv1.Pod)
	web := &skiffv1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	want := &skiffv1.PodSpec{
		NodeSelector: map[string]string{"disktype": "ssd"},
		Affinity: &skiffv1.Affinity{
			NodeAffinity: &skiffv1.NodeAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution: &skiffv1.NodeSelector{NodeSelectorTerms: []*skiffv1.NodeSelectorTerm{{
					MatchExpressions: []*skiffv1.NodeSelectorRequirement{{Key: "topology.kubernetes.io/zone", Operator: "In", Values: []string{"z1", "z2"}}},
					MatchFields:      []*skiffv1.NodeSelectorRequirement{{Key: "metadata.name", Operator: "NotIn", Values: []string{"n9"}}},
				}}},
				PreferredDuringSchedulingIgnoredDuringExecution: []*skiffv1.PreferredSchedulingTerm{{Weight: 10, Preference: &skiffv1.NodeSelectorTerm{
					MatchExpressions: []*skiffv1.NodeSelectorRequirement{{Key: "cores", Operator: "Gt", Values: []string{"4"}}},
				}}},
			},
			PodAntiAffinity: &skiffv1.PodAntiAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution: []*skiffv1.PodAffinityTerm{{LabelSelector: web, TopologyKey: "kubernetes.io/hostname"}},
				PreferredDuringSchedulingIgnoredDuringExecution: []*skiffv1.WeightedPodAffinityTerm{{Weight: 50, PodAffinityTerm: &skiffv1.PodAffinityTerm{
					LabelSelector: &skiffv1.LabelSelector{MatchExpressions: []*skiffv1.LabelSelectorRequirement{{Key: "app", Operator: "Exists"}}},
					TopologyKey:   "topology.kubernetes.io/zone", Namespaces: []string{"default"},
				}}},
			},
		},
		Tolerations: []*skiffv1.Toleration{
			{Key: "dedicated", Operator: "Equal", Value: "gpu", Effect: "NoSchedule"},
			{Key: "node.kubernetes.io/unreachable", Operator: "Exists", Effect: "NoExecute", TolerationSeconds: proto.Int64(300)},
		},
		TopologySpreadConstraints: []*skiffv1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "topology.kubernetes.io/zone", WhenUnsatisfiable: "DoNotSchedule", LabelSelector: web}},
		Containers:                []*skiffv1.Container{{Name: "web", Image: "web:v1"}},
	}
	if !proto.Equal(p.Spec, want) {
		t.Errorf("pod spec\n got %v\nwant %v", p.Spec, want)
	}
	n := objs[1].Msg.(*skiffv1.Node)
	if ts := n.Spec.GetTaints(); len(ts) != 2 || ts[0].Key != "dedicated" || ts[0].Value != "gpu" || ts[0].Effect != "NoSchedule" ||
		ts[1].Effect != "NoExecute" || ts[1].TimeAdded.AsTime().Format("2006-01-02") != "2026-11-28" || !n.Spec.Unschedulable {
		t.Errorf("node spec %v", n.Spec)
	}
}
