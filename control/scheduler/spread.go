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

// spreadState is what both halves of podTopologySpread work out for a pod:
// for each constraint, its key's domains and the matching pods in each.
type spreadState struct {
	constraints []spreadConstraint
	tables      []*domainTable
	counts      [][]int64
	// present marks, per constraint, the domains that count.
	present [][]bool
}

// newSpreadState counts, per constraint and domain, the pods of the pod's
// namespace that the constraint's selector picks and that are not being
// deleted, on the nodes that count (countNodes that have every key and
// that the pod's node selector and required affinity pick, as
// kube-scheduler), into the domains of domainNodes that have every key.
// Pods are counted once per group that a selector picks, not once per
// pod; the work is O(nodes + groups), and a node's domain a slice lookup.
func newSpreadState(p *podInfo, cs []spreadConstraint, x *podIndex, domainNodes, countNodes []*nodeInfo) *spreadState {
	st := &spreadState{constraints: cs, tables: make([]*domainTable, len(cs)), counts: make([][]int64, len(cs)), present: make([][]bool, len(cs))}
	for i, c := range cs {
		st.tables[i] = x.domains(c.key)
		st.counts[i] = make([]int64, len(st.tables[i].values))
		st.present[i] = make([]bool, len(st.tables[i].values))
	}
	for _, n := range domainNodes {
		if !inAll(st.tables, n) {
			continue
		}
		for i, t := range st.tables {
			st.present[i][t.domain(n)] = true
		}
	}
	counted := make([]bool, len(x.nodes))
	rules := hasRequiredNodeRules(p)
	for _, n := range countNodes {
		counted[n.idx] = inAll(st.tables, n) && (!rules || requiredNodeMatch(p, n))
	}
	ns := p.pod.GetMetadata().GetNamespace()
	for i, c := range cs {
		for _, g := range x.candidates(c.sel) {
			if g.namespace != ns || g.terminating || !c.sel.matches(g.labels) {
				continue
			}
			for n, k := range g.nodes {
				if n.idx >= len(counted) || !counted[n.idx] {
					continue
				}
				if id := st.tables[i].domain(n); st.present[i][id] {
					st.counts[i][id] += int64(k)
				}
			}
		}
	}
	return st
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
	eligible := nodes
	if hasRequiredNodeRules(p) {
		eligible = nil
		for _, n := range nodes {
			if requiredNodeMatch(p, n) {
				eligible = append(eligible, n)
			}
		}
	}
	f := spreadFilter{spreadState: newSpreadState(p, cs, x, eligible, nodes), mins: make([]int64, len(cs))}
	for i := range cs {
		lo := int64(math.MaxInt64)
		for id, k := range f.counts[i] {
			if f.present[i][id] {
				lo = min(lo, k)
			}
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
	*spreadState
	mins []int64
}

func (spreadFilter) Name() string { return "PodTopologySpread" }

// Filter judges each constraint by the node's domain; a domain no counted
// node is in (the pod's affinity leaves them out) holds no pods, as in
// kube-scheduler.
func (f spreadFilter) Filter(_ *podInfo, n *nodeInfo) *status {
	for i, c := range f.constraints {
		id := f.tables[i].domain(n)
		if id < 0 {
			return unfit(errSpreadLabel)
		}
		if f.counts[i][id]+int64(c.self)-f.mins[i] > c.maxSkew {
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
	s := spreadScorer{spreadState: newSpreadState(p, cs, x, feasible, all), weights: make([]float64, len(cs))}
	for i := range cs {
		domains := 0
		for _, in := range s.present[i] {
			if in {
				domains++
			}
		}
		s.weights[i] = math.Log(float64(domains + 2))
	}
	return s
}

// spreadScorer is podTopologySpread's scorer for one pod.
type spreadScorer struct {
	*spreadState
	weights []float64
}

func (spreadScorer) Name() string { return "PodTopologySpread" }

// Score is, summed over the constraints, the matching pods in the node's
// domain times the constraint's weight, plus maxSkew-1: more is worse.
func (s spreadScorer) Score(_ *podInfo, n *nodeInfo) int64 {
	if !inAll(s.tables, n) {
		return ignoredNode
	}
	var score float64
	for i, c := range s.constraints {
		score += float64(s.counts[i][s.tables[i].domain(n)])*s.weights[i] + float64(c.maxSkew-1)
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
