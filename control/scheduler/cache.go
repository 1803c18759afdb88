package scheduler

import (
	"cmp"
	"maps"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// cache is the scheduler's view of the cluster, kept by watches rather
// than listed for every change: every node and pod, the queue of pods
// waiting to be placed, the pods bound by this scheduler that the watch
// has not shown bound yet (assumed, so that the next placements count
// them), and the pods no node could take, which wait for the cluster to
// change (a node added or changed, a bound pod finished or deleted) or for
// the resync. Its methods may be called from any goroutine; objects in it
// are never changed, only replaced.
type cache struct {
	mu       sync.Mutex
	nodes    map[string]*skiffv1.Node
	nodeList []*skiffv1.Node // nodes by name; nil when a node changed since it was built
	pods     map[string]*skiffv1.Pod
	assumed  map[string]string // pod key -> the node it was bound to
	queue    []string          // pod keys to place, first come first placed
	queued   map[string]bool
	waiting  map[string]bool // unschedulable pods
	synced   struct{ pods, nodes bool }
	// changes counts the changes that may let a waiting pod fit, so that
	// a pod found unschedulable against an older view is tried again.
	changes uint64
	// The scheduler keeps its snapshot from one cycle to the next: full
	// says it must be built afresh (a node changed, a pod it counts went,
	// finished or moved), and added holds the pods bound since the last
	// view that it does not count yet.
	full  bool
	added []*skiffv1.Pod
	// changed names the nodes that changed (a heartbeat, a new
	// allocatable) since the last view, to be counted afresh.
	changed map[string]bool
	// kick has a value when the queue may have something to place.
	kick chan struct{}
}

func newCache() *cache {
	return &cache{
		nodes: map[string]*skiffv1.Node{}, pods: map[string]*skiffv1.Pod{},
		assumed: map[string]string{}, queued: map[string]bool{}, waiting: map[string]bool{},
		kick: make(chan struct{}, 1), full: true, changed: map[string]bool{},
	}
}

// pending reports whether a pod waits to be bound: unbound, not being
// deleted, and not started (phase Pending).
func pending(p *skiffv1.Pod) bool {
	if p.GetSpec().GetNodeName() != "" || p.GetMetadata().GetDeletionTimestamp() != nil {
		return false
	}
	ph := p.GetStatus().GetPhase()
	return ph == "Pending" || ph == ""
}

// holdsRoom reports whether a pod counts against its node's room.
func holdsRoom(p *skiffv1.Pod) bool {
	return p != nil && p.GetSpec().GetNodeName() != "" && !finished(p)
}

func (c *cache) signal() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// enqueue queues a pod to be placed; mu must be held.
func (c *cache) enqueue(key string) {
	if c.queued[key] {
		return
	}
	c.queued[key] = true
	c.queue = append(c.queue, key)
}

// retryWaiting queues every unschedulable pod again; mu must be held.
func (c *cache) retryWaiting() {
	c.changes++
	c.enqueueInOrder(slices.Collect(maps.Keys(c.waiting)))
	clear(c.waiting)
}

// enqueueInOrder queues pods oldest first (then by key), as they were
// created; mu must be held.
func (c *cache) enqueueInOrder(keys []string) {
	slices.SortFunc(keys, func(a, b string) int {
		ta, tb := c.pods[a].GetMetadata().GetCreationTimestamp(), c.pods[b].GetMetadata().GetCreationTimestamp()
		if d := cmp.Compare(ta.GetSeconds(), tb.GetSeconds()); d != 0 {
			return d
		}
		if d := cmp.Compare(ta.GetNanos(), tb.GetNanos()); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	for _, key := range keys {
		c.enqueue(key)
	}
}

// replacePods sets every pod, from a listing: each pending one is queued,
// and every unschedulable one is looked at again.
func (c *cache) replacePods(items []*skiffv1.Pod) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pods = make(map[string]*skiffv1.Pod, len(items))
	for _, p := range items {
		c.pods[podID(p)] = p
	}
	for key := range c.assumed {
		if p := c.pods[key]; p == nil || p.GetSpec().GetNodeName() != "" {
			delete(c.assumed, key)
		}
	}
	c.retryWaiting()
	for _, p := range items { // in the listing's order
		if key := podID(p); pending(p) && c.assumed[key] == "" {
			c.enqueue(key)
		}
	}
	c.full, c.added = true, nil
	c.synced.pods = true
	c.signal()
}

// replaceNodes sets every node, from a listing.
func (c *cache) replaceNodes(items []*skiffv1.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes = make(map[string]*skiffv1.Node, len(items))
	for _, n := range items {
		c.nodes[n.GetMetadata().GetName()] = n
	}
	c.nodeList = nil
	c.full, c.added = true, nil
	c.retryWaiting()
	c.synced.nodes = true
	c.signal()
}

// podEvent applies one watch event. A pod that finishes or goes away frees
// room on its node: every unschedulable pod is looked at again.
func (c *cache) podEvent(typ skiffv1.EventType, p *skiffv1.Pod) {
	key := podID(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.pods[key]
	if typ == skiffv1.EventType_EVENT_TYPE_DELETED {
		delete(c.pods, key)
		if holdsRoom(old) || c.assumed[key] != "" {
			c.full = true
		}
		delete(c.assumed, key)
		delete(c.waiting, key)
		if holdsRoom(old) {
			c.retryWaiting()
			c.signal()
		}
		return
	}
	c.pods[key] = p
	if node := p.GetSpec().GetNodeName(); node != "" {
		switch was := c.assumed[key]; {
		case old.GetSpec().GetNodeName() != "":
			// Counted already: recount if it finished or its labels
			// (which placement may weigh) changed.
			if holdsRoom(old) != holdsRoom(p) || !maps.Equal(old.GetMetadata().GetLabels(), p.GetMetadata().GetLabels()) {
				c.full = true
			}
		case was == node:
			// Counted where it was assumed.
		case was != "":
			c.full = true // bound elsewhere, by another scheduler
		case holdsRoom(p):
			c.added = append(c.added, p)
		}
		delete(c.assumed, key)
		delete(c.waiting, key)
		if holdsRoom(old) && !holdsRoom(p) {
			c.retryWaiting()
			c.signal()
		}
		return
	}
	if pending(p) && c.assumed[key] == "" && !c.waiting[key] {
		c.enqueue(key)
		c.signal()
	}
}

// nodeEvent applies one watch event. A node added or changed may take
// pods that fit nowhere before.
func (c *cache) nodeEvent(typ skiffv1.EventType, n *skiffv1.Node) {
	name := n.GetMetadata().GetName()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodeList = nil
	if old, known := c.nodes[name]; !known || typ == skiffv1.EventType_EVENT_TYPE_DELETED || !sameDomains(old, n) {
		c.full = true // the snapshot gains or loses a node, or its domains change
	} else {
		c.changed[name] = true
	}
	if typ == skiffv1.EventType_EVENT_TYPE_DELETED {
		delete(c.nodes, name)
		return
	}
	c.nodes[name] = n
	if len(c.waiting) > 0 {
		c.retryWaiting()
		c.signal()
	}
}

// resync queues every pending pod not in flight, unschedulable or not,
// and has the next cycle build its snapshot afresh: whatever the cycles
// since counted, it now counts what the cache holds.
func (c *cache) resync() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.full = true
	clear(c.waiting)
	var keys []string
	for key, p := range c.pods {
		if pending(p) && c.assumed[key] == "" && !c.queued[key] {
			keys = append(keys, key)
		}
	}
	c.enqueueInOrder(keys)
	c.signal()
}

// view is what one scheduling cycle places and places against.
type view struct {
	todo []*skiffv1.Pod // the pods to place
	// full says to build the snapshot afresh from nodes and bound; else
	// bound holds only the pods to add to the last one.
	full  bool
	nodes []*skiffv1.Node // every node, by name, when full
	bound []*skiffv1.Pod  // every unfinished pod bound or assumed bound, or those added
	// refresh holds, when not full, each node that changed with every pod
	// it counts, by name, to replace its part of the snapshot after the
	// pods added.
	refresh map[string]*nodePods
	// changes is cache.changes when the view was taken.
	changes uint64
}

// nodePods is a node and the pods it counts.
type nodePods struct {
	node *skiffv1.Node
	pods []*skiffv1.Pod
}

// take removes up to limit pods from the queue and returns them with what
// a placement needs to see. It returns no pods until both kinds have been
// listed.
func (c *cache) take(limit int) view {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.synced.pods || !c.synced.nodes || len(c.queue) == 0 {
		return view{}
	}
	var todo []*skiffv1.Pod
	n := 0
	for n < len(c.queue) && len(todo) < limit {
		key := c.queue[n]
		n++
		delete(c.queued, key)
		if p := c.pods[key]; p != nil && pending(p) && c.assumed[key] == "" {
			todo = append(todo, p)
		}
	}
	c.queue = c.queue[n:]
	if len(c.queue) == 0 {
		c.queue = nil // let the old array go
	}
	if !c.full {
		v := view{todo: todo, bound: c.added, changes: c.changes}
		c.added = nil
		if len(c.changed) > 0 {
			v.refresh = make(map[string]*nodePods, len(c.changed))
			for name := range c.changed {
				v.refresh[name] = &nodePods{node: c.nodes[name]}
			}
			for key, p := range c.pods {
				node := p.GetSpec().GetNodeName()
				switch {
				case node != "" && finished(p):
					continue
				case node == "" && c.assumed[key] != "":
					node = c.assumed[key]
					if !c.changed[node] {
						continue
					}
					p = boundTo(p, node)
				case node == "" || !c.changed[node]:
					continue
				}
				r := v.refresh[node]
				r.pods = append(r.pods, p)
			}
			clear(c.changed)
		}
		return v
	}
	c.full, c.added = false, nil
	clear(c.changed)
	if c.nodeList == nil {
		c.nodeList = make([]*skiffv1.Node, 0, len(c.nodes))
		for _, nd := range c.nodes {
			c.nodeList = append(c.nodeList, nd)
		}
		slices.SortFunc(c.nodeList, func(a, b *skiffv1.Node) int {
			return strings.Compare(a.GetMetadata().GetName(), b.GetMetadata().GetName())
		})
	}
	bound := make([]*skiffv1.Pod, 0, len(c.pods))
	for key, p := range c.pods {
		switch {
		case p.GetSpec().GetNodeName() != "":
			if !finished(p) {
				bound = append(bound, p)
			}
		case c.assumed[key] != "":
			bound = append(bound, boundTo(p, c.assumed[key]))
		}
	}
	return view{todo: todo, full: true, nodes: c.nodeList, bound: bound, changes: c.changes}
}

// boundTo is p as it will be once bound to node.
func boundTo(p *skiffv1.Pod, node string) *skiffv1.Pod {
	spec := proto.Clone(p.GetSpec()).(*skiffv1.PodSpec)
	spec.NodeName = node
	return &skiffv1.Pod{Metadata: p.GetMetadata(), Spec: spec, Status: p.GetStatus()}
}

// assume records bindings about to be written.
func (c *cache) assume(bs []binding) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range bs {
		c.assumed[podID(b.pod)] = b.node
	}
}

// Where a pod whose binding failed goes.
type retry int

const (
	dropIt  retry = iota // bound or gone meanwhile: the watch will tell
	queueIt              // try again now (it changed under the binding)
	waitIt               // try again on a change or the resync
)

// forget undoes the assumption of a binding that failed.
func (c *cache) forget(p *skiffv1.Pod, how retry) {
	key := podID(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.assumed[key] != "" {
		c.full = true // the snapshot counts it
	}
	delete(c.assumed, key)
	cur := c.pods[key]
	if cur == nil || !pending(cur) {
		return
	}
	switch how {
	case queueIt:
		c.enqueue(key)
		c.signal()
	case waitIt:
		c.waiting[key] = true
	}
}

// forgetAll undoes the assumption of bindings whose call failed; their
// pods are tried again on the next change or resync.
func (c *cache) forgetAll(bs []binding) {
	for _, b := range bs {
		c.forget(b.pod, waitIt)
	}
}

// unschedulable records that no node takes the pod in the view taken at
// changes; if the cluster changed since, it is queued again at once.
func (c *cache) unschedulable(p *skiffv1.Pod, changes uint64) {
	key := podID(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur := c.pods[key]; cur == nil || !pending(cur) || c.queued[key] {
		return
	}
	if c.changes != changes {
		c.enqueue(key)
		c.signal()
		return
	}
	c.waiting[key] = true
}

// queueLen is how many pods wait in the queue.
func (c *cache) queueLen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}
