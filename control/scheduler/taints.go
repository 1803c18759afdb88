package scheduler

import (
	"fmt"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// Taint effects, as Kubernetes names them.
const (
	effectNoSchedule       = "NoSchedule"
	effectPreferNoSchedule = "PreferNoSchedule"
	effectNoExecute        = "NoExecute"
)

// unschedulableTaint is the taint a cordoned node counts as having: a pod
// that tolerates it may still go there, as in Kubernetes.
var unschedulableTaint = &skiffv1.Taint{Key: "node.kubernetes.io/unschedulable", Effect: effectNoSchedule}

// tolerates reports whether one toleration lets a pod past a taint, as
// Kubernetes' Toleration.ToleratesTaint: an empty effect matches every
// effect, an empty key with Exists every key; Equal (the default) needs the
// same value, Exists any.
func tolerates(t *skiffv1.Toleration, taint *skiffv1.Taint) bool {
	if t.GetEffect() != "" && t.GetEffect() != taint.GetEffect() {
		return false
	}
	if t.GetKey() != "" && t.GetKey() != taint.GetKey() {
		return false
	}
	switch t.GetOperator() {
	case "", "Equal":
		return t.GetValue() == taint.GetValue()
	case "Exists":
		return true
	}
	return false
}

// tolerated reports whether any of the tolerations lets a pod past taint.
func tolerated(ts []*skiffv1.Toleration, taint *skiffv1.Taint) bool {
	for _, t := range ts {
		if tolerates(t, taint) {
			return true
		}
	}
	return false
}

// taintToleration keeps a pod off a node with a NoSchedule or NoExecute
// taint it does not tolerate, and prefers the nodes with the fewest
// PreferNoSchedule taints it does not tolerate, as kube-scheduler's
// TaintToleration.
type taintToleration struct{}

func (taintToleration) Name() string { return "TaintToleration" }

// PreFilter leaves the plugin out when no node has a NoSchedule or
// NoExecute taint.
func (f taintToleration) PreFilter(_ *podInfo, nodes []*nodeInfo) filter {
	if x := indexOf(nodes); x == nil || !x.noSchedule {
		return nil
	}
	return f
}

// Filter names the first untolerated taint, as kube-scheduler does:
// "node(s) had untolerated taint {dedicated: gpu}".
func (taintToleration) Filter(p *podInfo, n *nodeInfo) *status {
	if !n.noScheduleTaint {
		return nil
	}
	ts := p.pod.GetSpec().GetTolerations()
	for _, taint := range n.node.GetSpec().GetTaints() {
		if e := taint.GetEffect(); e != effectNoSchedule && e != effectNoExecute {
			continue
		}
		if !tolerated(ts, taint) {
			return unfit(fmt.Sprintf("node(s) had untolerated taint {%s: %s}", taint.GetKey(), taint.GetValue()))
		}
	}
	return nil
}

// PreScore leaves the plugin out when no node has a PreferNoSchedule
// taint: every node would score the same.
func (s taintToleration) PreScore(_ *podInfo, _, all []*nodeInfo) scorer {
	if x := indexOf(all); x == nil || !x.preferNoSchedule {
		return nil
	}
	return s
}

// Score is the number of the node's PreferNoSchedule taints that the
// pod's tolerations of that effect (or of every effect) do not cover;
// Normalize turns fewer into better.
func (taintToleration) Score(p *podInfo, n *nodeInfo) int64 {
	if !n.preferNoScheduleTaint {
		return 0
	}
	var count int64
	for _, taint := range n.node.GetSpec().GetTaints() {
		if taint.GetEffect() != effectPreferNoSchedule {
			continue
		}
		if !tolerated(p.pod.GetSpec().GetTolerations(), taint) {
			count++
		}
	}
	return count
}

// Normalize gives maxNodeScore to the nodes with the fewest untolerated
// taints and 0 to those with the most, in proportion to the count.
func (taintToleration) Normalize(scores []int64) { normalizeToMax(scores, true) }

// normalizeToMax scales scores to 0..maxNodeScore against the largest,
// reversed (the largest scores 0) when reverse is set, as kube-scheduler's
// DefaultNormalizeScore. When every score is 0, they stay 0, or all
// become maxNodeScore when reversed.
func normalizeToMax(scores []int64, reverse bool) {
	var most int64
	for _, s := range scores {
		most = max(most, s)
	}
	for i, s := range scores {
		switch {
		case most == 0 && reverse:
			scores[i] = maxNodeScore
		case most == 0:
			scores[i] = 0
		case reverse:
			scores[i] = maxNodeScore - s*maxNodeScore/most
		default:
			scores[i] = s * maxNodeScore / most
		}
	}
}
