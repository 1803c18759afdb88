package scheduler

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// filter turns down the nodes a pod cannot run on, as kube-scheduler's
// filter plugins do. Filter is called from one goroutine at a time and
// must not change the pod or the node.
type filter interface {
	Name() string
	// Filter returns nil when the node can take the pod, or why not.
	Filter(p *podInfo, n *nodeInfo) *status
}

// scorer ranks the nodes that passed every filter, as kube-scheduler's
// score plugins do. Score is called from one goroutine at a time.
type scorer interface {
	Name() string
	// Score is from 0 (worst) to maxNodeScore (best); a normalizer's
	// scores are raw, for Normalize to bring to that range.
	Score(p *podInfo, n *nodeInfo) int64
}

// preFilter is a filter that first works something out for the pod over
// the whole snapshot (counts of matching pods per topology domain, say),
// once per pod rather than once per node, as kube-scheduler's PreFilter.
type preFilter interface {
	filter
	// PreFilter returns the filter that judges each node for this pod,
	// or nil when the plugin has nothing to check for it. It may take
	// O(nodes) time; the filter it returns should take O(1) per node.
	PreFilter(p *podInfo, nodes []*nodeInfo) filter
}

// preScorer is a scorer that first works something out for the pod, as
// kube-scheduler's PreScore.
type preScorer interface {
	scorer
	// PreScore returns the scorer that ranks the feasible nodes for this
	// pod, or nil when the plugin has no preference for it (every node
	// scores 0). all is the whole snapshot, feasible those that passed
	// every filter.
	PreScore(p *podInfo, feasible, all []*nodeInfo) scorer
}

// normalizer is a scorer whose raw scores mean something only next to
// each other's, and are brought to 0..maxNodeScore over all the feasible
// nodes once each has one, as kube-scheduler's NormalizeScore.
type normalizer interface {
	Normalize(scores []int64)
}

// maxNodeScore is the best score a scorer gives.
const maxNodeScore = 100

// status is why a filter turned a node down: one reason or more, each
// counted on its own in the FailedScheduling message ("Insufficient cpu").
type status struct {
	reasons []string
}

func unfit(reasons ...string) *status { return &status{reasons: reasons} }

// weightedScorer is a scorer with its weight in a node's total score.
type weightedScorer struct {
	scorer
	weight int64
}

// profile is the plugins a pass runs: every filter in order, stopping at
// the first that turns a node down, then the weighted sum of the scores.
type profile struct {
	filters []filter
	scorers []weightedScorer
	// next is where place starts looking among the nodes, moved on past
	// the nodes each call looked at so that calls share the work around;
	// nil starts at the first node every time.
	next *int
}

// defaultProfile is kube-scheduler's default for the fields skiff has, in
// its order and with its weights: the node is schedulable, Ready with a
// fresh heartbeat, offers the pod's runtime, has no taint the pod does not
// tolerate, is one the pod's node selector and affinity pick, has room for
// its requests, keeps the pod's topology spread within its skew and
// breaks no pod anti-affinity. Scores: taint toleration 3; node affinity,
// topology spread and inter-pod (anti-)affinity 2; least-allocated and
// balanced allocation 1.
func defaultProfile(now func() time.Time) profile {
	return profile{
		filters: []filter{
			nodeUnschedulable{}, nodeReady{now: now}, runtimeClass{}, taintToleration{},
			nodeAffinity{}, resourceFit{}, podTopologySpread{}, interPodAntiAffinity{},
		},
		scorers: []weightedScorer{
			{taintToleration{}, 3}, {nodeAffinity{}, 2}, {podTopologySpread{}, 2}, {interPodAntiAffinity{}, 2},
			{leastAllocated{}, 1}, {balancedAllocation{}, 1},
		},
	}
}

// placeBuffers are the per-pod slices of place, reused from pod to pod.
type placeBuffers struct {
	filters  []filter
	feasible []*nodeInfo
	scores   []int64
	totals   []int64
	reasons  reasonCounts
}

// reasonCounts counts how many nodes each reason turned down. A pod sees
// few distinct reasons, most of them the very same strings, so they are
// counted in a short list, the pointer-equal strings comparing at once,
// and only past maxListedReasons in a map.
type reasonCounts struct {
	list []reasonCount
	more map[string]int
}

type reasonCount struct {
	reason string
	n      int
}

const maxListedReasons = 8

func (rc *reasonCounts) add(reason string) {
	for i := range rc.list {
		if rc.list[i].reason == reason {
			rc.list[i].n++
			return
		}
	}
	if len(rc.list) < maxListedReasons {
		rc.list = append(rc.list, reasonCount{reason, 1})
		return
	}
	if rc.more == nil {
		rc.more = map[string]int{}
	}
	rc.more[reason]++
}

// all is every reason with its count.
func (rc *reasonCounts) all() map[string]int {
	m := make(map[string]int, len(rc.list)+len(rc.more))
	for _, c := range rc.list {
		m[c.reason] = c.n
	}
	for r, n := range rc.more {
		m[r] += n
	}
	return m
}

func (rc *reasonCounts) reset() {
	clear(rc.list)
	rc.list = rc.list[:0]
	rc.more = nil
}

var placePool = sync.Pool{New: func() any { return new(placeBuffers) }}

// place returns the best node for the pod, or nil and a Kubernetes-style
// account of why none fits. Ties go to the node with fewer pods, then to
// the first by name, so a pass is deterministic. The pre-filter and
// pre-score hooks run once for the pod, the filters and scorers once per
// node, the normalizers once over the feasible nodes.
//
// As kube-scheduler's adaptive percentageOfNodesToScore, it stops looking
// once it has found nodesToFind nodes that fit (every node of a cluster
// up to 100 nodes), starting where the previous call stopped.
func (pr profile) place(p *podInfo, nodes []*nodeInfo) (*nodeInfo, string) {
	buf := placePool.Get().(*placeBuffers)
	defer func() {
		// Hold on to no snapshot between pods.
		clear(buf.filters)
		clear(buf.feasible)
		buf.reasons.reset()
		placePool.Put(buf)
	}()

	filters := buf.filters[:0]
	for _, f := range pr.filters {
		if pf, ok := f.(preFilter); ok {
			if f = pf.PreFilter(p, nodes); f == nil {
				continue
			}
		}
		filters = append(filters, f)
	}
	buf.filters = filters

	reasons := &buf.reasons
	feasible := buf.feasible[:0]
	start, looked, want := 0, 0, nodesToFind(len(nodes))
	if pr.next != nil && len(nodes) > 0 {
		start = *pr.next % len(nodes)
		defer func() { *pr.next = (start + looked) % len(nodes) }()
	}
	for i := range nodes {
		if len(feasible) == want {
			break
		}
		n := nodes[(start+i)%len(nodes)]
		looked++
		if st := runFilters(filters, p, n); st != nil {
			for _, r := range st.reasons {
				reasons.add(r)
			}
			continue
		}
		feasible = append(feasible, n)
	}
	buf.feasible = feasible
	switch len(feasible) {
	case 0:
		return nil, unschedulableMessage(len(nodes), reasons.all())
	case 1:
		return feasible[0], ""
	}

	totals := slices.Grow(buf.totals[:0], len(feasible))[:len(feasible)]
	clear(totals)
	scores := slices.Grow(buf.scores[:0], len(feasible))[:len(feasible)]
	buf.totals, buf.scores = totals, scores
	for _, ws := range pr.scorers {
		s := ws.scorer
		if ps, ok := s.(preScorer); ok {
			if s = ps.PreScore(p, feasible, nodes); s == nil {
				continue
			}
		}
		for i, n := range feasible {
			scores[i] = s.Score(p, n)
		}
		if nz, ok := s.(normalizer); ok {
			nz.Normalize(scores)
		}
		for i := range totals {
			totals[i] += ws.weight * scores[i]
		}
	}
	best := 0
	for i := 1; i < len(feasible); i++ {
		if totals[i] > totals[best] || totals[i] == totals[best] && better(feasible[i], feasible[best]) {
			best = i
		}
	}
	return feasible[best], ""
}

// minNodesToFind is the fewest fitting nodes place looks for.
const minNodesToFind = 100

// nodesToFind is how many fitting nodes place looks for among n: all up to
// minNodesToFind, then max(5, 50 - n/125) percent of them (10% of 5,000),
// and never fewer than minNodesToFind.
func nodesToFind(n int) int {
	if n <= minNodesToFind {
		return n
	}
	return max(minNodesToFind, n*max(5, 50-n/125)/100)
}

// runFilters runs the filters in order and returns the first refusal.
func runFilters(filters []filter, p *podInfo, n *nodeInfo) *status {
	for _, f := range filters {
		if st := f.Filter(p, n); st != nil {
			return st
		}
	}
	return nil
}

// better breaks a tie between two nodes of the same score.
func better(a, b *nodeInfo) bool {
	if a.requested.pods != b.requested.pods {
		return a.requested.pods < b.requested.pods
	}
	return a.name() < b.name()
}

// unschedulableMessage says why no node fits, as kube-scheduler does:
// "0/5 nodes are available: 3 Insufficient memory, 2 node(s) were not
// ready." with the reasons by count, most first, then by text.
func unschedulableMessage(nodes int, reasons map[string]int) string {
	type count struct {
		reason string
		n      int
	}
	counts := make([]count, 0, len(reasons))
	for r, n := range reasons {
		counts = append(counts, count{r, n})
	}
	sort.Slice(counts, func(i, j int) bool {
		if counts[i].n != counts[j].n {
			return counts[i].n > counts[j].n
		}
		return counts[i].reason < counts[j].reason
	})
	var b strings.Builder
	fmt.Fprintf(&b, "0/%d nodes are available", nodes)
	for i, c := range counts {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d %s", c.n, c.reason)
	}
	b.WriteString(".")
	return b.String()
}
