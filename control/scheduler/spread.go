package scheduler

import (
	"math"
)

// kube-scheduler's wording for a node that would break a DoNotSchedule
// topology spread constraint, or that lacks one of its topology keys.
const (
	errSpread      = "node(s) didn't match pod topology spread constraints"
	errSpreadLabel = errSpread + " (missing required label)"
)

// spreadConstraint is one of a pod's topology spread constraints, ready to
// count with.
type spreadConstraint struct {
	maxSkew int64
	key     string
	sel     labelMatcher
	// self is 1 when the selector picks the pod itself, else 0.
	self int
}

// spreadConstraints compiles those of a pod's constraints that have the
// given whenUnsatisfiable.
func spreadConstraints(p *podInfo, when string) []spreadConstraint {
	var out []spreadConstraint
	for _, c := range p.pod.GetSpec().GetTopologySpreadConstraints() {
		if c.GetWhenUnsatisfiable() != when {
			continue
		}
		sc := spreadConstraint{maxSkew: int64(c.GetMaxSkew()), key: c.GetTopologyKey(), sel: newLabelMatcher(c.GetLabelSelector())}
		if sc.sel.matches(p.pod.GetMetadata().GetLabels()) {
			sc.self = 1
		}
		out = append(out, sc)
	}
	return out
}

// hasKeys reports whether the node has every constraint's topology key.
func hasKeys(cs []spreadConstraint, n *nodeInfo) bool {
	for _, c := range cs {
		if _, ok := topologyValue(n, c.key); !ok {
			return false
		}
	}
	return true
}

// spreadCounts counts, per constraint and domain, the pods of the pod's
// namespace that the constraint's selector picks and that are not being
// deleted, on the nodes that count (counted), into domains that already
// have an entry (those of the nodes the caller puts there first). It runs
// once per group that a selector picks, not once per pod.
func spreadCounts(p *podInfo, cs []spreadConstraint, x *podIndex, counts []map[string]int64, counted func(*nodeInfo) bool) {
	ns := p.pod.GetMetadata().GetNamespace()
	for _, g := range x.order {
		if g.namespace != ns || g.terminating {
			continue
		}
		for i, c := range cs {
			if !c.sel.matches(g.labels) {
				continue
			}
			for n, k := range g.nodes {
				if !counted(n) {
					continue
				}
				v, _ := topologyValue(n, c.key)
				if _, ok := counts[i][v]; ok {
					counts[i][v] += int64(k)
				}
			}
		}
	}
}

// podTopologySpread keeps the pods a constraint's selector picks spread
// over the domains of its topology key, as kube-scheduler's
// PodTopologySpread. DoNotSchedule constraints filter: a node may take
// the pod only when its domain would then have at most maxSkew more
// matching pods than the domain with the fewest. ScheduleAnyway
// constraints score: fewer matching pods in the node's domain is better.
// Domains and counts come from the nodes the pod's node selector and
// required affinity pick and that have every topology key.
type podTopologySpread struct{}

func (podTopologySpread) Name() string { return "PodTopologySpread" }

// Filter is only ever called on the filter PreFilter returns.
func (podTopologySpread) Filter(*podInfo, *nodeInfo) *status { return nil }

// PreFilter counts the matching pods of each domain of each DoNotSchedule
// constraint and finds each constraint's smallest count.
func (podTopologySpread) PreFilter(p *podInfo, nodes []*nodeInfo) filter {
	cs := spreadConstraints(p, "DoNotSchedule")
	x := indexOf(nodes)
	if len(cs) == 0 || x == nil {
		return nil
	}
	eligible := func(n *nodeInfo) bool { return hasKeys(cs, n) && requiredNodeMatch(p, n) }
	f := spreadFilter{constraints: cs, counts: make([]map[string]int64, len(cs)), mins: make([]int64, len(cs))}
	for i := range cs {
		f.counts[i] = map[string]int64{}
	}
	for _, n := range nodes {
		if !eligible(n) {
			continue
		}
		for i, c := range cs {
			v, _ := topologyValue(n, c.key)
			f.counts[i][v] += 0
		}
	}
	spreadCounts(p, cs, x, f.counts, eligible)
	for i := range cs {
		lo := int64(math.MaxInt64)
		for _, k := range f.counts[i] {
			lo = min(lo, k)
		}
		if lo == math.MaxInt64 {
			lo = 0
		}
		f.mins[i] = lo
	}
	return f
}

// spreadFilter is podTopologySpread's filter for one pod.
type spreadFilter struct {
	constraints []spreadConstraint
	counts      []map[string]int64
	mins        []int64
}

func (spreadFilter) Name() string { return "PodTopologySpread" }

func (f spreadFilter) Filter(_ *podInfo, n *nodeInfo) *status {
	for i, c := range f.constraints {
		v, ok := topologyValue(n, c.key)
		if !ok {
			return unfit(errSpreadLabel)
		}
		if f.counts[i][v]+int64(c.self)-f.mins[i] > c.maxSkew {
			return unfit(errSpread)
		}
	}
	return nil
}

// Score is only ever called on the scorer PreScore returns.
func (podTopologySpread) Score(*podInfo, *nodeInfo) int64 { return 0 }

// ignoredNode is the raw spread score of a feasible node that lacks a
// topology key: it scores 0 once normalised.
const ignoredNode = math.MinInt64

// PreScore counts the matching pods of the domains of the feasible nodes
// for each ScheduleAnyway constraint, and weighs each constraint by the
// log of its number of domains, as kube-scheduler does.
func (podTopologySpread) PreScore(p *podInfo, feasible, all []*nodeInfo) scorer {
	cs := spreadConstraints(p, "ScheduleAnyway")
	x := indexOf(all)
	if len(cs) == 0 || x == nil {
		return nil
	}
	s := spreadScorer{constraints: cs, counts: make([]map[string]int64, len(cs)), weights: make([]float64, len(cs))}
	for i := range cs {
		s.counts[i] = map[string]int64{}
	}
	for _, n := range feasible {
		if !hasKeys(cs, n) {
			continue
		}
		for i, c := range cs {
			v, _ := topologyValue(n, c.key)
			s.counts[i][v] += 0
		}
	}
	for i := range cs {
		s.weights[i] = math.Log(float64(len(s.counts[i]) + 2))
	}
	spreadCounts(p, cs, x, s.counts, func(n *nodeInfo) bool { return hasKeys(cs, n) && requiredNodeMatch(p, n) })
	return s
}

// spreadScorer is podTopologySpread's scorer for one pod.
type spreadScorer struct {
	constraints []spreadConstraint
	counts      []map[string]int64
	weights     []float64
}

func (spreadScorer) Name() string { return "PodTopologySpread" }

// Score is, summed over the constraints, the matching pods in the node's
// domain times the constraint's weight, plus maxSkew-1: more is worse.
func (s spreadScorer) Score(_ *podInfo, n *nodeInfo) int64 {
	if !hasKeys(s.constraints, n) {
		return ignoredNode
	}
	var score float64
	for i, c := range s.constraints {
		v, _ := topologyValue(n, c.key)
		score += float64(s.counts[i][v])*s.weights[i] + float64(c.maxSkew-1)
	}
	return int64(math.Round(score))
}

// Normalize gives maxNodeScore to the nodes with the lowest raw score and
// less to the others, as kube-scheduler's PodTopologySpread: 100 * (max +
// min - score) / max; nodes without the topology keys score 0.
func (spreadScorer) Normalize(scores []int64) {
	lo, hi := int64(math.MaxInt64), int64(0)
	for _, s := range scores {
		if s == ignoredNode {
			continue
		}
		lo, hi = min(lo, s), max(hi, s)
	}
	for i, s := range scores {
		switch {
		case s == ignoredNode:
			scores[i] = 0
		case hi == 0:
			scores[i] = maxNodeScore
		default:
			scores[i] = maxNodeScore * (hi + lo - s) / hi
		}
	}
}
