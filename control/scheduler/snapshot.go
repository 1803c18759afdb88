package scheduler

import (
	"maps"
	"math/big"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

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

// sub takes back what add added (exactly, unless a sum was capped).
func (r *resources) sub(o resources) {
	r.milliCPU -= o.milliCPU
	r.memory -= o.memory
	r.pods -= o.pods
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
	// groupKey names the pod's namespace and labels (and whether it is
	// being deleted): pods with the same key are one podGroup.
	groupKey string
	// antiKey names the pod's namespace and pod anti-affinity, or is
	// empty when the pod has none: pods with the same key are one
	// antiGroup.
	antiKey string
}

// nodeInfo is one node as a pass sees it: its allocatable and what the
// unfinished pods bound to it request, including those bound earlier in
// the same pass, and those pods in the snapshot's index. Plugins read it
// and never change it. Only newSnapshot makes one.
type nodeInfo struct {
	node *skiffv1.Node
	// nodeName is the node's name, read once: place compares names for
	// every tie.
	nodeName    string
	allocatable resources
	requested   resources
	nonZero     resources
	// What the filters read of the node, read once when the nodeInfo is
	// made: a pod's pass over thousands of nodes then reads each one's
	// nodeInfo alone, not the Node's fields scattered over the heap.
	//
	// unschedulable is spec.unschedulable. ready is whether a Ready
	// condition is True, and heartbeat the latest heartbeat of those that
	// are. runtimes is status.runtimes. noScheduleTaint is whether the
	// node has a NoSchedule or NoExecute taint, preferNoScheduleTaint
	// whether it has a PreferNoSchedule one. runtimeSet has the
	// runtimeBit of each of the runtimes.
	unschedulable, ready                   bool
	noScheduleTaint, preferNoScheduleTaint bool
	heartbeat                              time.Time
	runtimes                               []string
	runtimeSet                             uint64
	// index is the snapshot's, shared by all its nodes.
	index *podIndex
	// idx is the node's place in the snapshot, for plugins that keep a
	// per-pod table of nodes in a slice rather than a map.
	idx int
}

// newNodeInfo reads what placement needs of a node, counting no pods yet.
func newNodeInfo(n *skiffv1.Node, x *podIndex, idx int) nodeInfo {
	ni := nodeInfo{
		node: n, nodeName: n.GetMetadata().GetName(), allocatable: nodeAllocatable(n), index: x, idx: idx,
		unschedulable: n.GetSpec().GetUnschedulable(), runtimes: n.GetStatus().GetRuntimes(),
	}
	for _, r := range ni.runtimes {
		ni.runtimeSet |= runtimeBit(r)
	}
	for _, c := range n.GetStatus().GetConditions() {
		if c.GetType() != "Ready" || c.GetStatus() != "True" {
			continue
		}
		if hb := c.GetLastHeartbeatTime().AsTime(); !ni.ready || hb.After(ni.heartbeat) {
			ni.heartbeat = hb
		}
		ni.ready = true
	}
	for _, t := range n.GetSpec().GetTaints() {
		if t.GetEffect() == effectPreferNoSchedule {
			ni.preferNoScheduleTaint = true
		} else {
			ni.noScheduleTaint = true
		}
	}
	return ni
}

func (n *nodeInfo) name() string {
	if n.nodeName == "" {
		return n.node.GetMetadata().GetName()
	}
	return n.nodeName
}

// assume counts a pod just bound to the node, so that the rest of the pass
// sees it: its requests, and its labels and anti-affinity in the index.
func (n *nodeInfo) assume(p *podInfo) {
	n.requested.add(p.request)
	n.nonZero.add(p.nonZero)
	n.index.add(p, n)
}

// forget takes back a pod that assume counted on the node (it finished,
// went away, or its binding failed), so that a snapshot kept from pass to
// pass stays true.
func (n *nodeInfo) forget(p *podInfo) {
	n.requested.sub(p.request)
	n.nonZero.sub(p.nonZero)
	n.index.remove(p, n)
}

// refreshNode counts a changed node afresh in its place in the snapshot,
// with every unfinished pod bound to it now, and returns its new nodeInfo.
// The node's labels and taints must be as the snapshot knew them
// (sameDomains): the index numbers domains by label and knows which taints
// exist over every node, so a change of those needs a new snapshot.
func refreshNode(old *nodeInfo, n *skiffv1.Node, pods []*skiffv1.Pod) *nodeInfo {
	x := old.index
	x.forgetNode(old)
	ni := new(nodeInfo)
	*ni = newNodeInfo(n, x, old.idx)
	x.nodes[old.idx] = ni
	for _, p := range pods {
		if !finished(p) {
			ni.assume(newPodInfo(p))
		}
	}
	return ni
}

// sameDomains reports whether two versions of a node have the same labels
// and taints, so that a snapshot may count the newer in the older's place.
func sameDomains(a, b *skiffv1.Node) bool {
	return maps.Equal(a.GetMetadata().GetLabels(), b.GetMetadata().GetLabels()) &&
		slices.EqualFunc(a.GetSpec().GetTaints(), b.GetSpec().GetTaints(), func(a, b *skiffv1.Taint) bool {
			return a.GetKey() == b.GetKey() && a.GetValue() == b.GetValue() && a.GetEffect() == b.GetEffect()
		})
}

// forgetNode takes every pod counted on n out of the index.
func (x *podIndex) forgetNode(n *nodeInfo) {
	for _, g := range x.order {
		delete(g.nodes, n)
	}
	for _, a := range x.antiOrder {
		delete(a.nodes, n)
	}
}

// podIndex is what a snapshot knows of its unfinished pods beyond each
// node's sums, for the plugins that count pods by label (topology spread,
// pod anti-affinity). Pods are grouped by namespace and labels, so that
// the replicas of one workload are one group whatever their number: a
// pod's selector is matched once per group, and the group says how many
// of its pods each node runs. Pods with a pod anti-affinity are grouped
// the same way by their terms.
//
// It also numbers the domains of each topology key a pod asks about, once
// per snapshot (whose nodes and labels do not change), so that the plugins'
// per-pod tables are slices indexed by domain number, not maps.
type podIndex struct {
	groups map[string]*podGroup
	order  []*podGroup
	// byLabel is the groups that have each label, "key=value", so that a
	// selector that needs one is matched against those groups alone.
	byLabel   map[string][]*podGroup
	anti      map[string]*antiGroup
	antiOrder []*antiGroup
	// nodes is every node of the snapshot, at its idx.
	nodes []*nodeInfo
	// preferNoSchedule is whether any node has a PreferNoSchedule taint,
	// noSchedule whether any has a NoSchedule or NoExecute one.
	preferNoSchedule, noSchedule bool

	mu     sync.Mutex // guards tables: place may run for pods in parallel
	tables map[string]*domainTable
}

// domains is the numbering of the key's domains over every node of the
// snapshot.
func (x *podIndex) domains(key string) *domainTable {
	x.mu.Lock()
	defer x.mu.Unlock()
	t := x.tables[key]
	if t == nil {
		t = newDomainTable(x.nodes, key)
		x.tables[key] = t
	}
	return t
}

// podGroup is the pods of one namespace with the same labels.
type podGroup struct {
	namespace   string
	labels      map[string]string
	terminating bool
	// nodes is how many of the group's pods each node runs.
	nodes map[*nodeInfo]int
}

// antiGroup is the pods of one namespace with the same pod anti-affinity,
// its terms compiled once.
type antiGroup struct {
	required, preferred []affinityTerm
	nodes               map[*nodeInfo]int
}

func newPodIndex() *podIndex {
	return &podIndex{groups: map[string]*podGroup{}, byLabel: map[string][]*podGroup{}, anti: map[string]*antiGroup{}, tables: map[string]*domainTable{}}
}

func (x *podIndex) add(p *podInfo, n *nodeInfo) {
	g := x.groups[p.groupKey]
	if g == nil {
		m := p.pod.GetMetadata()
		g = &podGroup{namespace: m.GetNamespace(), labels: m.GetLabels(), terminating: m.GetDeletionTimestamp() != nil, nodes: map[*nodeInfo]int{}}
		x.groups[p.groupKey] = g
		x.order = append(x.order, g)
		for k, v := range g.labels {
			x.byLabel[k+"="+v] = append(x.byLabel[k+"="+v], g)
		}
	}
	g.nodes[n]++
	if p.antiKey == "" {
		return
	}
	a := x.anti[p.antiKey]
	if a == nil {
		a = &antiGroup{nodes: map[*nodeInfo]int{}}
		a.required, a.preferred = antiAffinityTerms(p.pod.GetSpec().GetAffinity().GetPodAntiAffinity(), p.pod.GetMetadata().GetNamespace())
		x.anti[p.antiKey] = a
		x.antiOrder = append(x.antiOrder, a)
	}
	a.nodes[n]++
}

func (x *podIndex) remove(p *podInfo, n *nodeInfo) {
	if g := x.groups[p.groupKey]; g != nil && g.nodes[n] > 0 {
		if g.nodes[n]--; g.nodes[n] == 0 {
			delete(g.nodes, n)
		}
	}
	if a := x.anti[p.antiKey]; p.antiKey != "" && a != nil && a.nodes[n] > 0 {
		if a.nodes[n]--; a.nodes[n] == 0 {
			delete(a.nodes, n)
		}
	}
}

// candidates is the groups that sel may pick: those with the rarest of
// the labels it needs (matchLabels, or In with one value), or every group
// when it needs none.
func (x *podIndex) candidates(sel labelMatcher) []*podGroup {
	if sel.sel == nil {
		return nil
	}
	out, found := x.order, false
	try := func(k, v string) {
		if gs := x.byLabel[k+"="+v]; !found || len(gs) < len(out) {
			out, found = gs, true
		}
	}
	for k, v := range sel.sel.GetMatchLabels() {
		try(k, v)
	}
	for _, e := range sel.sel.GetMatchExpressions() {
		if e.GetOperator() == "In" && len(e.GetValues()) == 1 {
			try(e.GetKey(), e.GetValues()[0])
		}
	}
	return out
}

// indexOf is the index of a snapshot's nodes; nil when there are none.
func indexOf(nodes []*nodeInfo) *podIndex {
	if len(nodes) == 0 {
		return nil
	}
	return nodes[0].index
}

// groupKey is a pod's namespace, labels in key order and deletion mark,
// separated by bytes that neither names nor label values may hold.
func groupKey(p *skiffv1.Pod) string {
	m := p.GetMetadata()
	keys := make([]string, 0, len(m.GetLabels()))
	for k := range m.GetLabels() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(m.GetNamespace())
	for _, k := range keys {
		b.WriteByte(0)
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(m.Labels[k])
	}
	if m.GetDeletionTimestamp() != nil {
		b.WriteString("\x00\x01")
	}
	return b.String()
}

// antiKey is a pod's namespace and pod anti-affinity terms in their
// deterministic wire form, or "" when it has no terms.
func antiKey(p *skiffv1.Pod) string {
	a := p.GetSpec().GetAffinity().GetPodAntiAffinity()
	if len(a.GetRequiredDuringSchedulingIgnoredDuringExecution()) == 0 && len(a.GetPreferredDuringSchedulingIgnoredDuringExecution()) == 0 {
		return ""
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
	if err != nil {
		return p.GetMetadata().GetNamespace() + "\x00" + p.GetMetadata().GetUid()
	}
	return p.GetMetadata().GetNamespace() + "\x00" + string(b)
}

// newPodInfo works out what a pod requests, as Kubernetes does: each
// resource is the larger of the containers' sum and the largest init
// container (init containers run one at a time, before the others). A
// container with a limit and no request requests its limit, as Kubernetes
// defaults it. Quantities the apiserver would refuse count as nothing.
func newPodInfo(p *skiffv1.Pod) *podInfo {
	pi := &podInfo{pod: p, request: resources{pods: 1}, nonZero: resources{pods: 1}, groupKey: groupKey(p), antiKey: antiKey(p)}
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
	index := newPodIndex()
	// One array, so that a pass over the nodes reads memory in order.
	all := make([]nodeInfo, len(nodes))
	for i, n := range nodes {
		ni := &all[i]
		*ni = newNodeInfo(n, index, i)
		index.preferNoSchedule = index.preferNoSchedule || ni.preferNoScheduleTaint
		index.noSchedule = index.noSchedule || ni.noScheduleTaint
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
	index.nodes = infos
	return infos
}
