package scheduler

import (
	"fmt"
	"time"
)

// nodeUnschedulable turns down a cordoned node (spec.unschedulable),
// unless the pod tolerates the node.kubernetes.io/unschedulable:NoSchedule
// taint, as in Kubernetes.
type nodeUnschedulable struct{}

func (nodeUnschedulable) Name() string { return "NodeUnschedulable" }

func (nodeUnschedulable) Filter(p *podInfo, n *nodeInfo) *status {
	if n.node.GetSpec().GetUnschedulable() && !tolerated(p.pod.GetSpec().GetTolerations(), unschedulableTaint) {
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

func (f nodeReady) Filter(_ *podInfo, n *nodeInfo) *status {
	for _, c := range n.node.GetStatus().GetConditions() {
		if c.GetType() == "Ready" && c.GetStatus() == "True" && f.now().Sub(c.GetLastHeartbeatTime().AsTime()) < HeartbeatGrace {
			return nil
		}
	}
	return unfit("node(s) were not ready")
}

// runtimeClass turns down a node that does not offer the pod's
// runtimeClassName. A pod that names none runs each container by its
// image's kind, which only the node learns: any node will do.
type runtimeClass struct{}

func (runtimeClass) Name() string { return "RuntimeClass" }

func (runtimeClass) Filter(p *podInfo, n *nodeInfo) *status {
	want := p.pod.GetSpec().GetRuntimeClassName()
	if want == "" {
		return nil
	}
	for _, r := range n.node.GetStatus().GetRuntimes() {
		if r == want {
			return nil
		}
	}
	return unfit(fmt.Sprintf("node(s) did not offer runtime %q", want))
}

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
