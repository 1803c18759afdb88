package scheduler

import (
	"math/big"
	"sync"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/quantity"
)

// What a container that requests no CPU or memory counts as when nodes are
// scored (not when they are filtered), as kube-scheduler's non-zero
// defaults: so that pods without requests still spread.
const (
	defaultMilliCPURequest = 100
	defaultMemoryRequest   = 200 << 20
)

// resources is an amount of each resource the scheduler weighs: CPU in
// millicores, memory in bytes and a number of pods. In a node's
// allocatable, a negative amount means the node does not say, and that
// resource is neither checked nor scored.
type resources struct {
	milliCPU int64
	memory   int64
	pods     int64
}

func (r *resources) add(o resources) {
	r.milliCPU = addCapped(r.milliCPU, o.milliCPU)
	r.memory = addCapped(r.memory, o.memory)
	r.pods = addCapped(r.pods, o.pods)
}

// maxAmount caps every amount, so that sums of huge quantities (the API
// takes up to 2^62 of anything) never wrap around.
const maxAmount = 1 << 62

func addCapped(a, b int64) int64 {
	return min(a+b, maxAmount) // both at most 2^62: the sum fits
}

// podInfo is a pending pod with its requests worked out once per pass.
type podInfo struct {
	pod *skiffv1.Pod
	// request is what the pod asks of a node: pods is 1.
	request resources
	// nonZero is request with each container that asks for no CPU or
	// memory counted at the defaults above; for scoring only.
	nonZero resources
}

// nodeInfo is one node as a pass sees it: its allocatable and what the
// unfinished pods bound to it request, including those bound earlier in
// the same pass. Plugins read it and never change it.
type nodeInfo struct {
	node *skiffv1.Node
	// nodeName is the node's name, read once: place compares names for
	// every tie.
	nodeName    string
	allocatable resources
	requested   resources
	nonZero     resources
}

func (n *nodeInfo) name() string {
	if n.nodeName == "" {
		return n.node.GetMetadata().GetName()
	}
	return n.nodeName
}

// assume counts a pod just bound to the node, so that the rest of the pass
// sees it.
func (n *nodeInfo) assume(p *podInfo) {
	n.requested.add(p.request)
	n.nonZero.add(p.nonZero)
}

// newPodInfo works out what a pod requests, as Kubernetes does: each
// resource is the larger of the containers' sum and the largest init
// container (init containers run one at a time, before the others). A
// container with a limit and no request requests its limit, as Kubernetes
// defaults it. Quantities the apiserver would refuse count as nothing.
func newPodInfo(p *skiffv1.Pod) *podInfo {
	pi := &podInfo{pod: p, request: resources{pods: 1}, nonZero: resources{pods: 1}}
	var sum, sumNZ, initMax, initMaxNZ resources
	for _, c := range p.GetSpec().GetContainers() {
		r, nz := containerRequest(c)
		sum.add(r)
		sumNZ.add(nz)
	}
	for _, c := range p.GetSpec().GetInitContainers() {
		r, nz := containerRequest(c)
		initMax.milliCPU, initMax.memory = max(initMax.milliCPU, r.milliCPU), max(initMax.memory, r.memory)
		initMaxNZ.milliCPU, initMaxNZ.memory = max(initMaxNZ.milliCPU, nz.milliCPU), max(initMaxNZ.memory, nz.memory)
	}
	pi.request.milliCPU, pi.request.memory = max(sum.milliCPU, initMax.milliCPU), max(sum.memory, initMax.memory)
	pi.nonZero.milliCPU, pi.nonZero.memory = max(sumNZ.milliCPU, initMaxNZ.milliCPU), max(sumNZ.memory, initMaxNZ.memory)
	return pi
}

// containerRequest is what one container requests, and the same with the
// non-zero defaults for what it leaves out.
func containerRequest(c *skiffv1.Container) (req, nonZero resources) {
	amount := func(name string) (string, bool) {
		if v, ok := c.GetResources().GetRequests()[name]; ok {
			return v, true
		}
		v, ok := c.GetResources().GetLimits()[name]
		return v, ok
	}
	if v, ok := amount("cpu"); ok {
		req.milliCPU = max(scaled(v, 1000), 0)
	}
	if v, ok := amount("memory"); ok {
		req.memory = max(scaled(v, 1), 0)
	}
	nonZero = req
	if nonZero.milliCPU == 0 {
		nonZero.milliCPU = defaultMilliCPURequest
	}
	if nonZero.memory == 0 {
		nonZero.memory = defaultMemoryRequest
	}
	return req, nonZero
}

// nodeAllocatable reads a node's allocatable, or its capacity when it
// reports no allocatable at all; a resource it does not name, or names
// with a bad quantity, is -1.
func nodeAllocatable(n *skiffv1.Node) resources {
	m := n.GetStatus().GetAllocatable()
	if len(m) == 0 {
		m = n.GetStatus().GetCapacity()
	}
	read := func(name string, scale int64) int64 {
		v, ok := m[name]
		if !ok {
			return -1
		}
		return scaled(v, scale)
	}
	return resources{milliCPU: read("cpu", 1000), memory: read("memory", 1), pods: read("pods", 1)}
}

// scaled parses a quantity and returns it times scale, rounded up and at
// most maxAmount; -1 when it is not a quantity. Pods and nodes repeat a
// few quantities ("100m", "64Mi") and every snapshot reads them all, so
// answers are remembered, up to maxScaledMemo of them.
func scaled(v string, scale int64) int64 {
	k := scaledKey{v, scale}
	scaledMemo.Lock()
	n, ok := scaledMemo.m[k]
	scaledMemo.Unlock()
	if ok {
		return n
	}
	n = parseScaled(v, scale)
	scaledMemo.Lock()
	if len(scaledMemo.m) < maxScaledMemo {
		scaledMemo.m[k] = n
	}
	scaledMemo.Unlock()
	return n
}

type scaledKey struct {
	v     string
	scale int64
}

const maxScaledMemo = 4096

var scaledMemo = struct {
	sync.Mutex
	m map[scaledKey]int64
}{m: map[scaledKey]int64{}}

func parseScaled(v string, scale int64) int64 {
	q, err := quantity.Parse(v)
	if err != nil {
		return -1
	}
	q.Mul(q, big.NewRat(scale, 1))
	if q.Cmp(big.NewRat(maxAmount, 1)) >= 0 {
		return maxAmount
	}
	return quantity.Ceil(q)
}

// finished reports whether a pod has ended for good and holds nothing on
// its node.
func finished(p *skiffv1.Pod) bool {
	ph := p.GetStatus().GetPhase()
	return ph == "Succeeded" || ph == "Failed"
}

// newSnapshot builds the nodeInfo of every node from the pods bound to it
// that have not finished. Pods bound to a node not in the list are left
// out.
func newSnapshot(nodes []*skiffv1.Node, pods []*skiffv1.Pod) []*nodeInfo {
	infos := make([]*nodeInfo, 0, len(nodes))
	byName := make(map[string]*nodeInfo, len(nodes))
	for _, n := range nodes {
		ni := &nodeInfo{node: n, nodeName: n.GetMetadata().GetName(), allocatable: nodeAllocatable(n)}
		infos = append(infos, ni)
		byName[ni.name()] = ni
	}
	for _, p := range pods {
		ni := byName[p.GetSpec().GetNodeName()]
		if ni == nil || finished(p) {
			continue
		}
		ni.assume(newPodInfo(p))
	}
	return infos
}
