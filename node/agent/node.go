package agent

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// Register creates this node's Node object, or refreshes its status (and
// so its agent endpoint) when it exists from an earlier run. When it returns,
// the apiserver can reach this agent. A new node carries the well-known
// labels a kubelet sets (kubernetes.io/hostname, os and arch), so that
// manifests written for Kubernetes that select nodes by them place here.
func (a *Agent) Register(ctx context.Context) error {
	n := &skiffv1.Node{
		Metadata: &skiffv1.ObjectMeta{Name: a.cfg.NodeName, Labels: map[string]string{
			"kubernetes.io/hostname": a.cfg.NodeName, "kubernetes.io/os": runtime.GOOS, "kubernetes.io/arch": runtime.GOARCH,
		}},
		Spec:   &skiffv1.NodeSpec{},
		Status: a.nodeStatus(ctx, nil),
	}
	res, err := a.cfg.Nodes.Create(ctx, connect.NewRequest(n))
	if connect.CodeOf(err) == connect.CodeAlreadyExists {
		err = a.updateStatus(ctx)
	} else if err == nil {
		a.applyPodCIDR(ctx, res.Msg)
	}
	if err != nil {
		return fmt.Errorf("register node %s: %w", a.cfg.NodeName, err)
	}
	a.log.Info("node registered", "endpoint", a.cfg.Endpoint)
	return nil
}

// heartbeat refreshes the node's Ready condition until ctx ends.
func (a *Agent) heartbeat(ctx context.Context) {
	t := time.NewTicker(a.timing.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := a.updateStatus(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("node heartbeat failed", "err", err)
			}
		}
	}
}

// updateStatus writes a fresh status, retrying on a conflicting write.
func (a *Agent) updateStatus(ctx context.Context) error {
	for try := 0; ; try++ {
		res, err := a.cfg.Nodes.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: a.cfg.NodeName}))
		if err != nil {
			return err
		}
		n := res.Msg
		a.applyPodCIDR(ctx, n)
		n.Status = a.nodeStatus(ctx, n.Status)
		res2, err := a.cfg.Nodes.UpdateStatus(ctx, connect.NewRequest(n))
		if err == nil {
			// A node registered before it could have a pod CIDR gets
			// one with its status update.
			a.applyPodCIDR(ctx, res2.Msg)
		}
		if connect.CodeOf(err) != connect.CodeAborted || try == 3 {
			return err
		}
	}
}

// applyPodCIDR hands the node's pod CIDR, once the control plane has
// allocated it, to the CRI server's pod network, as the kubelet does
// through UpdateRuntimeConfig. It is told again after each agent start
// (the CRI server may have restarted too) and when it changes.
func (a *Agent) applyPodCIDR(ctx context.Context, n *skiffv1.Node) {
	cidr := n.GetSpec().GetPodCidr()
	if cidr == "" {
		return
	}
	a.cidrMu.Lock()
	defer a.cidrMu.Unlock()
	if cidr == a.podCIDR {
		return
	}
	_, err := a.cfg.Runtime.UpdateRuntimeConfig(ctx, &runtimeapi.UpdateRuntimeConfigRequest{
		RuntimeConfig: &runtimeapi.RuntimeConfig{NetworkConfig: &runtimeapi.NetworkConfig{PodCidr: cidr}},
	})
	if err != nil {
		a.log.Warn("give the pod CIDR to the CRI server", "cidr", cidr, "err", err)
		return
	}
	a.podCIDR = cidr
	a.log.Info("pod CIDR applied", "cidr", cidr)
}

// nodeStatus reads the node's state: its runtimes from CRI Status and its
// capacity from the machine. The Ready condition keeps its transition time
// while its status stays the same.
func (a *Agent) nodeStatus(ctx context.Context, old *skiffv1.NodeStatus) *skiffv1.NodeStatus {
	now := timestamppb.New(a.now())
	ready := &skiffv1.Condition{Type: "Ready", Status: "True", Reason: "AgentReady", Message: "skiff agent is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now}
	var runtimes []string
	st, err := a.cfg.Runtime.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		ready.Status, ready.Reason, ready.Message = "False", "RuntimeUnreachable", fmt.Sprintf("CRI status: %v", err)
	} else {
		for _, c := range st.GetStatus().GetConditions() {
			if c.GetType() == runtimeapi.RuntimeReady && !c.GetStatus() {
				ready.Status, ready.Reason, ready.Message = "False", "RuntimeNotReady", c.GetMessage()
			}
		}
		for _, h := range st.GetRuntimeHandlers() {
			if h.GetName() != "" {
				runtimes = append(runtimes, h.GetName())
			}
		}
		if len(runtimes) == 0 {
			runtimes = []string{"wasm"}
		}
	}
	for _, c := range old.GetConditions() {
		if c.GetType() == "Ready" && c.GetStatus() == ready.Status {
			ready.LastTransitionTime = c.GetLastTransitionTime()
		}
	}
	memKi := memTotalKi()
	return &skiffv1.NodeStatus{
		Capacity: map[string]string{
			"cpu":    strconv.Itoa(runtime.NumCPU()),
			"memory": strconv.FormatInt(memKi, 10) + "Ki",
			"pods":   strconv.Itoa(a.maxPods()),
		},
		Allocatable:   allocatable(runtime.NumCPU(), memKi, a.maxPods()),
		Runtimes:      runtimes,
		Conditions:    []*skiffv1.Condition{ready},
		AgentEndpoint: a.cfg.Endpoint,
		AgentVersion:  a.cfg.Version,
		Addresses:     a.addresses(),
	}
}

// DefaultMaxPods is the pods a node takes unless told otherwise, as the
// kubelet's --max-pods default.
const DefaultMaxPods = 110

// maxPods is Config.MaxPods, or DefaultMaxPods.
func (a *Agent) maxPods() int {
	if a.cfg.MaxPods > 0 {
		return a.cfg.MaxPods
	}
	return DefaultMaxPods
}

// What a node keeps for itself (the skiff agent, its CRI server and the
// system) out of its capacity: 100m of CPU and 256Mi of memory, the order
// of the kubelet's kube-reserved plus eviction threshold on a small node.
const (
	reservedMilliCPU = 100
	reservedMemoryKi = 256 << 10
)

// allocatable is capacity less the node's reserve, never below zero.
func allocatable(cpus int, memKi int64, pods int) map[string]string {
	return map[string]string{
		"cpu":    strconv.FormatInt(max(int64(cpus)*1000-reservedMilliCPU, 0), 10) + "m",
		"memory": strconv.FormatInt(max(memKi-reservedMemoryKi, 0), 10) + "Ki",
		"pods":   strconv.Itoa(pods),
	}
}

// memTotalKi reads the machine's memory in KiB, or 0 when /proc/meminfo
// cannot be read.
func memTotalKi() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			n, _ := strconv.ParseInt(fields[1], 10, 64)
			return n
		}
	}
	return 0
}

// addresses are the node's InternalIP, when known, and its hostname.
func (a *Agent) addresses() []*skiffv1.NodeAddress {
	var out []*skiffv1.NodeAddress
	if a.cfg.NodeIP != "" {
		out = append(out, &skiffv1.NodeAddress{Type: "InternalIP", Address: a.cfg.NodeIP})
	}
	return append(out, &skiffv1.NodeAddress{Type: "Hostname", Address: a.cfg.NodeName})
}
