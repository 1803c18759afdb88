package scheduler

import (
	"math"
	"slices"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// affinityTerm is a PodAffinityTerm ready to match, with its weight when
// it is a preferred one.
type affinityTerm struct {
	sel labelMatcher
	// namespaces the term looks in: the term's, or its pod's own.
	namespaces []string
	key        string
	weight     int64
}

func newAffinityTerm(t *skiffv1.PodAffinityTerm, namespace string, weight int32) affinityTerm {
	ns := t.GetNamespaces()
	if len(ns) == 0 {
		ns = []string{namespace}
	}
	return affinityTerm{sel: newLabelMatcher(t.GetLabelSelector()), namespaces: ns, key: t.GetTopologyKey(), weight: int64(weight)}
}

// picks reports whether the term selects a pod of the namespace with the
// labels.
func (t affinityTerm) picks(namespace string, labels map[string]string) bool {
	return slices.Contains(t.namespaces, namespace) && t.sel.matches(labels)
}

// antiAffinityTerms compiles a pod's required and preferred anti-affinity.
func antiAffinityTerms(a *skiffv1.PodAntiAffinity, namespace string) (required, preferred []affinityTerm) {
	for _, t := range a.GetRequiredDuringSchedulingIgnoredDuringExecution() {
		required = append(required, newAffinityTerm(t, namespace, 0))
	}
	for _, t := range a.GetPreferredDuringSchedulingIgnoredDuringExecution() {
		if t.GetWeight() != 0 {
			preferred = append(preferred, newAffinityTerm(t.GetPodAffinityTerm(), namespace, t.GetWeight()))
		}
	}
	return required, preferred
}

// interPodAntiAffinity keeps a pod out of every topology domain that runs
// a pod its required anti-affinity picks, and out of every domain of a pod
// whose required anti-affinity picks it (the rule holds both ways); it
// prefers the domains with the least weight of preferred anti-affinity
// against it, both ways too. As kube-scheduler's InterPodAffinity, for
// the anti-affinity half (skiff has no positive pod affinity).
type interPodAntiAffinity struct{}

func (interPodAntiAffinity) Name() string { return "InterPodAffinity" }

// kube-scheduler's wording for the two ways a node breaks anti-affinity.
const (
	errAntiAffinity         = "node(s) didn't match pod anti-affinity rules"
	errExistingAntiAffinity = "node(s) didn't satisfy existing pods anti-affinity rules"
)

// domainMarks is a value per domain of each topology key some term names:
// whether it is closed, or its weight.
type domainMarks[T any] struct {
	x      *podIndex
	tables []*domainTable
	marks  [][]T
}

// mark applies f, with the pod count, to the mark of the domain of key
// of every node in nodes that runs a pod. A key's marks are made on first
// use.
func (d *domainMarks[T]) mark(key string, nodes map[*nodeInfo]int, f func(*T, int)) {
	t := d.x.domains(key)
	i := slices.Index(d.tables, t)
	if i < 0 {
		i = len(d.tables)
		d.tables = append(d.tables, t)
		d.marks = append(d.marks, make([]T, len(t.values)))
	}
	for n, count := range nodes {
		if id := t.domain(n); id >= 0 && count > 0 {
			f(&d.marks[i][id], count)
		}
	}
}

// Filter is only ever called on the filter PreFilter returns.
func (interPodAntiAffinity) Filter(*podInfo, *nodeInfo) *status { return nil }

// PreFilter works out, over the index's groups, the domains the pod's own
// required terms close and those that running pods' terms close to it.
func (interPodAntiAffinity) PreFilter(p *podInfo, nodes []*nodeInfo) filter {
	x := indexOf(nodes)
	if x == nil {
		return nil
	}
	m := p.pod.GetMetadata()
	required, _ := antiAffinityTerms(p.pod.GetSpec().GetAffinity().GetPodAntiAffinity(), m.GetNamespace())
	f := antiAffinityFilter{own: &domainMarks[bool]{x: x}, existing: &domainMarks[bool]{x: x}}
	closeDomain := func(b *bool, _ int) { *b = true }
	for _, t := range required {
		for _, g := range x.candidates(t.sel) {
			if t.picks(g.namespace, g.labels) {
				f.own.mark(t.key, g.nodes, closeDomain)
			}
		}
	}
	for _, a := range x.antiOrder {
		for _, t := range a.required {
			if t.picks(m.GetNamespace(), m.GetLabels()) {
				f.existing.mark(t.key, a.nodes, closeDomain)
			}
		}
	}
	if len(f.own.tables) == 0 && len(f.existing.tables) == 0 {
		return nil
	}
	return f
}

// antiAffinityFilter is interPodAntiAffinity's filter for one pod.
type antiAffinityFilter struct {
	own, existing *domainMarks[bool]
}

func (antiAffinityFilter) Name() string { return "InterPodAffinity" }

func (f antiAffinityFilter) Filter(_ *podInfo, n *nodeInfo) *status {
	if closed(f.own, n) {
		return unfit(errAntiAffinity)
	}
	if closed(f.existing, n) {
		return unfit(errExistingAntiAffinity)
	}
	return nil
}

func closed(d *domainMarks[bool], n *nodeInfo) bool {
	for i, t := range d.tables {
		if id := t.domain(n); id >= 0 && d.marks[i][id] {
			return true
		}
	}
	return false
}

// Score is only ever called on the scorer PreScore returns.
func (interPodAntiAffinity) Score(*podInfo, *nodeInfo) int64 { return 0 }

// PreScore sums, per domain, the weight of the pod's preferred terms times
// the pods they pick there, and the weight of running pods' preferred
// terms that pick the pod; every such weight counts against the domain.
func (interPodAntiAffinity) PreScore(p *podInfo, _, all []*nodeInfo) scorer {
	x := indexOf(all)
	if x == nil {
		return nil
	}
	m := p.pod.GetMetadata()
	_, preferred := antiAffinityTerms(p.pod.GetSpec().GetAffinity().GetPodAntiAffinity(), m.GetNamespace())
	s := antiAffinityScorer{weights: &domainMarks[int64]{x: x}}
	for _, t := range preferred {
		for _, g := range x.candidates(t.sel) {
			if t.picks(g.namespace, g.labels) {
				s.weights.mark(t.key, g.nodes, func(w *int64, count int) { *w -= t.weight * int64(count) })
			}
		}
	}
	for _, a := range x.antiOrder {
		for _, t := range a.preferred {
			if t.picks(m.GetNamespace(), m.GetLabels()) {
				s.weights.mark(t.key, a.nodes, func(w *int64, count int) { *w -= t.weight * int64(count) })
			}
		}
	}
	if len(s.weights.tables) == 0 {
		return nil
	}
	return s
}

// antiAffinityScorer is interPodAntiAffinity's scorer for one pod.
type antiAffinityScorer struct {
	weights *domainMarks[int64]
}

func (antiAffinityScorer) Name() string { return "InterPodAffinity" }

// Score is the sum of the weights on the node's domains.
func (s antiAffinityScorer) Score(_ *podInfo, n *nodeInfo) int64 {
	var sum int64
	for i, t := range s.weights.tables {
		if id := t.domain(n); id >= 0 {
			sum += s.weights.marks[i][id]
		}
	}
	return sum
}

// Normalize maps the lowest sum to 0 and the highest to maxNodeScore, as
// kube-scheduler's InterPodAffinity; all 0 when they are all equal.
func (antiAffinityScorer) Normalize(scores []int64) {
	lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
	for _, s := range scores {
		lo, hi = min(lo, s), max(hi, s)
	}
	for i, s := range scores {
		if hi > lo {
			scores[i] = int64(float64(maxNodeScore) * float64(s-lo) / float64(hi-lo))
		} else {
			scores[i] = 0
		}
	}
}
