package scheduler

import (
	"fmt"
	"sort"
	"strings"
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
	// Score is from 0 (worst) to maxNodeScore (best).
	Score(p *podInfo, n *nodeInfo) int64
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

// defaultProfile is kube-scheduler's default for the fields skiff has:
// the node is schedulable, Ready with a fresh heartbeat, offers the pod's
// runtime and has room for its requests; least-allocated and balanced
// allocation weigh one each.
func defaultProfile(now func() time.Time) profile {
	return profile{
		filters: []filter{nodeUnschedulable{}, nodeReady{now: now}, runtimeClass{}, resourceFit{}},
		scorers: []weightedScorer{{leastAllocated{}, 1}, {balancedAllocation{}, 1}},
	}
}

// place returns the best node for the pod, or nil and a Kubernetes-style
// account of why none fits. Ties go to the node with fewer pods, then to
// the first by name, so a pass is deterministic.
//
// As kube-scheduler's adaptive percentageOfNodesToScore, it stops looking
// once it has found nodesToFind nodes that fit (every node of a cluster
// up to 100 nodes), starting where the previous call stopped.
func (pr profile) place(p *podInfo, nodes []*nodeInfo) (*nodeInfo, string) {
	reasons := map[string]int{}
	var best *nodeInfo
	var bestScore int64
	start, looked, fit, want := 0, 0, 0, nodesToFind(len(nodes))
	if pr.next != nil && len(nodes) > 0 {
		start = *pr.next % len(nodes)
		defer func() { *pr.next = (start + looked) % len(nodes) }()
	}
	for i := range nodes {
		if fit == want {
			break
		}
		n := nodes[(start+i)%len(nodes)]
		looked++
		if st := pr.filter(p, n); st != nil {
			for _, r := range st.reasons {
				reasons[r]++
			}
			continue
		}
		fit++
		score := pr.score(p, n)
		if best == nil || score > bestScore || score == bestScore && better(n, best) {
			best, bestScore = n, score
		}
	}
	if best == nil {
		return nil, unschedulableMessage(len(nodes), reasons)
	}
	return best, ""
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

func (pr profile) filter(p *podInfo, n *nodeInfo) *status {
	for _, f := range pr.filters {
		if st := f.Filter(p, n); st != nil {
			return st
		}
	}
	return nil
}

func (pr profile) score(p *podInfo, n *nodeInfo) int64 {
	var total int64
	for _, s := range pr.scorers {
		total += s.weight * s.Score(p, n)
	}
	return total
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
