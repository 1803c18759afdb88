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

// topoPair is one topology domain: a node label and its value.
type topoPair struct {
	key, value string
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
	f := antiAffinityFilter{own: map[topoPair]bool{}, existing: map[topoPair]bool{}}
	for _, t := range required {
		f.ownKeys = appendKey(f.ownKeys, t.key)
		for _, g := range x.order {
			if t.picks(g.namespace, g.labels) {
				closeDomains(f.own, g.nodes, t.key)
			}
		}
	}
	for _, a := range x.antiOrder {
		for _, t := range a.required {
			if t.picks(m.GetNamespace(), m.GetLabels()) {
				f.existingKeys = appendKey(f.existingKeys, t.key)
				closeDomains(f.existing, a.nodes, t.key)
			}
		}
	}
	if len(f.own) == 0 && len(f.existing) == 0 {
		return nil
	}
	return f
}

func appendKey(keys []string, k string) []string {
	if slices.Contains(keys, k) {
		return keys
	}
	return append(keys, k)
}

// closeDomains marks the domain, by key, of every node that runs a pod.
func closeDomains(closed map[topoPair]bool, nodes map[*nodeInfo]int, key string) {
	for n, count := range nodes {
		if count == 0 {
			continue
		}
		if v, ok := topologyValue(n, key); ok {
			closed[topoPair{key, v}] = true
		}
	}
}

// antiAffinityFilter is interPodAntiAffinity's filter for one pod.
type antiAffinityFilter struct {
	ownKeys, existingKeys []string
	own, existing         map[topoPair]bool
}

func (antiAffinityFilter) Name() string { return "InterPodAffinity" }

func (f antiAffinityFilter) Filter(_ *podInfo, n *nodeInfo) *status {
	if inClosed(f.own, f.ownKeys, n) {
		return unfit(errAntiAffinity)
	}
	if inClosed(f.existing, f.existingKeys, n) {
		return unfit(errExistingAntiAffinity)
	}
	return nil
}

func inClosed(closed map[topoPair]bool, keys []string, n *nodeInfo) bool {
	for _, k := range keys {
		if v, ok := topologyValue(n, k); ok && closed[topoPair{k, v}] {
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
	s := antiAffinityScorer{domains: map[topoPair]int64{}}
	for _, t := range preferred {
		for _, g := range x.order {
			if t.picks(g.namespace, g.labels) {
				s.keys = appendKey(s.keys, t.key)
				weighDomains(s.domains, g.nodes, t.key, -t.weight)
			}
		}
	}
	for _, a := range x.antiOrder {
		for _, t := range a.preferred {
			if t.picks(m.GetNamespace(), m.GetLabels()) {
				s.keys = appendKey(s.keys, t.key)
				weighDomains(s.domains, a.nodes, t.key, -t.weight)
			}
		}
	}
	if len(s.domains) == 0 {
		return nil
	}
	return s
}

// weighDomains adds weight, once per pod, to the domain of every node
// that runs pods.
func weighDomains(domains map[topoPair]int64, nodes map[*nodeInfo]int, key string, weight int64) {
	for n, count := range nodes {
		if v, ok := topologyValue(n, key); ok && count > 0 {
			domains[topoPair{key, v}] += weight * int64(count)
		}
	}
}

// antiAffinityScorer is interPodAntiAffinity's scorer for one pod.
type antiAffinityScorer struct {
	keys    []string
	domains map[topoPair]int64
}

func (antiAffinityScorer) Name() string { return "InterPodAffinity" }

// Score is the sum of the weights on the node's domains.
func (s antiAffinityScorer) Score(_ *podInfo, n *nodeInfo) int64 {
	var sum int64
	for _, k := range s.keys {
		if v, ok := topologyValue(n, k); ok {
			sum += s.domains[topoPair{k, v}]
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
