package scheduler

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// nodeUnschedulable turns down a cordoned node (spec.unschedulable),
// unless the pod tolerates the node.kubernetes.io/unschedulable:NoSchedule
// taint, as in Kubernetes.
type nodeUnschedulable struct{}

func (nodeUnschedulable) Name() string { return "NodeUnschedulable" }

func (nodeUnschedulable) Filter(p *podInfo, n *nodeInfo) *status {
	if n.unschedulable && !tolerated(p.pod.GetSpec().GetTolerations(), unschedulableTaint) {
		return unfit("node(s) were unschedulable")
	}
	return nil
}

// nodeReady turns down a node whose Ready condition is not True, or whose
// heartbeat is older than HeartbeatGrace by now().
type nodeReady struct {
	now func() time.Time
}

func (nodeReady) Name() string { return "NodeReady" }

// PreFilter reads the clock once for the pod.
func (f nodeReady) PreFilter(*podInfo, []*nodeInfo) filter {
	return readyAt{f.now()}
}

func (f nodeReady) Filter(p *podInfo, n *nodeInfo) *status {
	return readyAt{f.now()}.Filter(p, n)
}

// readyAt is nodeReady for one pod, with the clock read.
type readyAt struct {
	now time.Time
}

func (readyAt) Name() string { return "NodeReady" }

func (f readyAt) Filter(_ *podInfo, n *nodeInfo) *status {
	if n.ready && f.now.Sub(n.heartbeat) < HeartbeatGrace {
		return nil
	}
	return errNotReady
}

// errNotReady is nodeReady's refusal, made once: it is never changed.
var errNotReady = unfit("node(s) were not ready")

// runtimeClass turns down a node that does not offer the pod's
// runtimeClassName. A pod that names none runs each container by its
// image's kind, which only the node learns: any node will do.
type runtimeClass struct{}

func (runtimeClass) Name() string { return "RuntimeClass" }

// PreFilter leaves the plugin out for a pod that names no runtime, and
// looks up the bit of the one it names.
func (runtimeClass) PreFilter(p *podInfo, _ []*nodeInfo) filter {
	want := p.pod.GetSpec().GetRuntimeClassName()
	if want == "" {
		return nil
	}
	return runtimeFilter{want: want, bit: runtimeBit(want)}
}

func (runtimeClass) Filter(p *podInfo, n *nodeInfo) *status {
	f := runtimeClass{}.PreFilter(p, nil)
	if f == nil {
		return nil
	}
	return f.Filter(p, n)
}

// runtimeFilter is runtimeClass for a pod that names a runtime.
type runtimeFilter struct {
	want string
	bit  uint64 // 0: the name has no bit, look in the node's list
}

func (runtimeFilter) Name() string { return "RuntimeClass" }

func (f runtimeFilter) Filter(_ *podInfo, n *nodeInfo) *status {
	if f.bit != 0 && n.runtimeSet&f.bit != 0 || f.bit == 0 && slices.Contains(n.runtimes, f.want) {
		return nil
	}
	return unfit(fmt.Sprintf("node(s) did not offer runtime %q", f.want))
}

// runtimeBit is the bit of a runtime name in nodeInfo.runtimeSet, given
// to the name the first time it is asked for; 0 once 64 names have one.
func runtimeBit(name string) uint64 {
	runtimeBits.Lock()
	defer runtimeBits.Unlock()
	b, ok := runtimeBits.m[name]
	if !ok && len(runtimeBits.m) < 64 {
		b = 1 << len(runtimeBits.m)
		runtimeBits.m[name] = b
	}
	return b
}

var runtimeBits = struct {
	sync.Mutex
	m map[string]uint64
}{m: map[string]uint64{}}

// resourceFit turns down a node whose allocatable cannot hold the pod's
// requests on top of what its unfinished pods request, as kube-scheduler's
// NodeResourcesFit: one pod more than "pods" allows is "Too many pods";
// CPU and memory are checked only when the pod requests them. A resource
// the node does not report is not checked.
type resourceFit struct{}

func (resourceFit) Name() string { return "NodeResourcesFit" }

func (resourceFit) Filter(p *podInfo, n *nodeInfo) *status {
	var reasons []string
	a, used, want := n.allocatable, n.requested, p.request
	if a.pods >= 0 && used.pods+want.pods > a.pods {
		reasons = append(reasons, "Too many pods")
	}
	if a.milliCPU >= 0 && want.milliCPU > 0 && used.milliCPU+want.milliCPU > a.milliCPU {
		reasons = append(reasons, "Insufficient cpu")
	}
	if a.memory >= 0 && want.memory > 0 && used.memory+want.memory > a.memory {
		reasons = append(reasons, "Insufficient memory")
	}
	if reasons == nil {
		return nil
	}
	return unfit(reasons...)
}
