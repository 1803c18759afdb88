package scheduler

// nodeAffinity keeps a pod on the nodes its nodeSelector and required node
// affinity pick, and prefers those its preferred terms pick, by the sum of
// their weights, as kube-scheduler's NodeAffinity.
type nodeAffinity struct{}

func (nodeAffinity) Name() string { return "NodeAffinity" }

// errNodeAffinity is kube-scheduler's wording for a node the pod's
// nodeSelector or required affinity does not pick.
const errNodeAffinity = "node(s) didn't match Pod's node affinity/selector"

// PreFilter leaves the plugin out for a pod with no node selector and no
// required node affinity.
func (f nodeAffinity) PreFilter(p *podInfo, _ []*nodeInfo) filter {
	if !hasRequiredNodeRules(p) {
		return nil
	}
	return f
}

func (nodeAffinity) Filter(p *podInfo, n *nodeInfo) *status {
	if !requiredNodeMatch(p, n) {
		return unfit(errNodeAffinity)
	}
	return nil
}

// PreScore leaves the plugin out for a pod with no preferred terms.
func (s nodeAffinity) PreScore(p *podInfo, _, _ []*nodeInfo) scorer {
	if len(p.pod.GetSpec().GetAffinity().GetNodeAffinity().GetPreferredDuringSchedulingIgnoredDuringExecution()) == 0 {
		return nil
	}
	return s
}

// Score is the sum of the weights of the preferred terms that pick the
// node.
func (nodeAffinity) Score(p *podInfo, n *nodeInfo) int64 {
	var sum int64
	for _, t := range p.pod.GetSpec().GetAffinity().GetNodeAffinity().GetPreferredDuringSchedulingIgnoredDuringExecution() {
		if t.GetWeight() != 0 && nodeSelectorTermMatches(t.GetPreference(), n) {
			sum += int64(t.GetWeight())
		}
	}
	return sum
}

// Normalize scales the sums so that the best node scores maxNodeScore.
func (nodeAffinity) Normalize(scores []int64) { normalizeToMax(scores, false) }
