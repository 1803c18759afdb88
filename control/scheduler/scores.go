package scheduler

import (
	"math"
	"math/bits"
)

// leastAllocated prefers the node with the most CPU and memory left once
// the pod is on it, as kube-scheduler's LeastAllocated strategy: for each
// resource the node reports, (allocatable - requested) * 100 / allocatable
// (0 when over), averaged with equal weights. Requests are the non-zero
// ones, so that pods without requests spread too.
type leastAllocated struct{}

func (leastAllocated) Name() string { return "LeastAllocated" }

func (leastAllocated) Score(p *podInfo, n *nodeInfo) int64 {
	var sum, count int64
	for _, r := range allocation(n.allocatable, n.nonZero, p.nonZero) {
		if r.requested > r.allocatable {
			count++
			continue
		}
		// (allocatable - requested) * 100 may not fit in 64 bits; the
		// quotient, at most 100, does.
		hi, lo := bits.Mul64(uint64(r.allocatable-r.requested), maxNodeScore)
		q, _ := bits.Div64(hi, lo, uint64(r.allocatable))
		sum += int64(q)
		count++
	}
	if count == 0 {
		return 0
	}
	return sum / count
}

// balancedAllocation prefers the node whose CPU and memory would be used
// in the most even shares once the pod is on it, as kube-scheduler's
// NodeResourcesBalancedAllocation: (1 - the standard deviation of the
// requested fractions) * 100, each fraction at most 1. Requests are the
// pods' own, without the non-zero defaults.
type balancedAllocation struct{}

func (balancedAllocation) Name() string { return "NodeResourcesBalancedAllocation" }

func (balancedAllocation) Score(p *podInfo, n *nodeInfo) int64 {
	var fractions []float64
	for _, r := range allocation(n.allocatable, n.requested, p.request) {
		fractions = append(fractions, min(float64(r.requested)/float64(r.allocatable), 1))
	}
	if len(fractions) < 2 {
		return maxNodeScore
	}
	var mean float64
	for _, f := range fractions {
		mean += f
	}
	mean /= float64(len(fractions))
	var variance float64
	for _, f := range fractions {
		variance += (f - mean) * (f - mean)
	}
	std := math.Sqrt(variance / float64(len(fractions)))
	return int64((1 - std) * maxNodeScore)
}

// share is one resource of a node as the scorers see it.
type share struct {
	allocatable, requested int64
}

// allocation is, for CPU and memory, the node's allocatable and what it
// would have requested with the pod on it; a resource the node does not
// report, or reports as zero, is left out.
func allocation(alloc, used, pod resources) []share {
	out := make([]share, 0, 2)
	if alloc.milliCPU > 0 {
		out = append(out, share{alloc.milliCPU, addCapped(used.milliCPU, pod.milliCPU)})
	}
	if alloc.memory > 0 {
		out = append(out, share{alloc.memory, addCapped(used.memory, pod.memory)})
	}
	return out
}
