package agent

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// status computes the pod's status from what the worker saw, by the
// kubelet's rules: Pending until every container has started, Running while
// any runs or will restart, then Succeeded when all exited 0, else Failed.
func (w *podWorker) status() *skiffv1.PodStatus {
	st := &skiffv1.PodStatus{Phase: "Pending", HostIp: w.a.cfg.NodeIP}
	if len(w.podIPs) > 0 {
		st.PodIp = w.podIPs[0]
		for _, ip := range w.podIPs {
			st.PodIps = append(st.PodIps, &skiffv1.PodIP{Ip: ip})
		}
	}
	if !w.startTime.IsZero() {
		st.StartTime = timestamppb.New(w.startTime)
	}
	if w.sandboxErr != "" {
		st.Reason, st.Message = "SandboxError", w.sandboxErr
	}
	// Init containers: each is ready once it has succeeded; one that
	// failed and will not run again fails the pod.
	var incomplete []string
	initFailed := false
	for _, spec := range w.pod.GetSpec().GetInitContainers() {
		c := w.containers[spec.Name]
		cs := &skiffv1.ContainerStatus{Name: spec.Name, Image: spec.Image, State: waiting("PodInitializing", ""), Ready: proto.Bool(false), RestartCount: proto.Uint32(0), Started: proto.Bool(false)}
		if c != nil {
			cs.State, cs.LastState, cs.RestartCount, cs.ImageId, cs.ContainerId = c.state, c.last, proto.Uint32(c.restarts), c.imageID, c.id
			cs.Started = proto.Bool(c.state.GetRunning() != nil)
			if initDone(c) {
				cs.Ready = proto.Bool(true)
			}
			if t := c.state.GetTerminated(); t != nil && (t.GetExitCode() != 0 || c.failed) && (c.failed || !w.shouldRestart(c, t.GetExitCode())) {
				initFailed = true
				st.Reason, st.Message = "InitContainerFailed", fmt.Sprintf("init container %s: %s exit code %d %s", spec.Name, t.GetReason(), t.GetExitCode(), t.GetMessage())
			}
		}
		if !cs.GetReady() && !w.initialized {
			incomplete = append(incomplete, spec.Name)
		}
		st.InitContainerStatuses = append(st.InitContainerStatuses, cs)
	}
	notStarted := waiting("ContainerCreating", "")
	if len(incomplete) > 0 {
		notStarted = waiting("PodInitializing", "")
	}

	specs := w.pod.GetSpec().GetContainers()
	var running, started, succeeded, failed int
	var unready []string
	for _, spec := range specs {
		c := w.containers[spec.Name]
		cs := &skiffv1.ContainerStatus{Name: spec.Name, Image: spec.Image, State: notStarted, Ready: proto.Bool(false), RestartCount: proto.Uint32(0), Started: proto.Bool(false)}
		var probes *probes
		if c != nil {
			probes = c.probes
			cs.State, cs.LastState, cs.RestartCount, cs.ImageId, cs.ContainerId = c.state, c.last, proto.Uint32(c.restarts), c.imageID, c.id
			if c.failed {
				st.Reason, st.Message = c.state.GetTerminated().GetReason(), fmt.Sprintf("container %s: %s", spec.Name, c.state.GetTerminated().GetMessage())
			}
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
		switch {
		case cs.State.GetRunning() != nil:
			running++
			started++
			up, ready, _ := probes.verdict()
			cs.Started = proto.Bool(up)
			cs.Ready = proto.Bool(up && ready)
		case cs.State.GetTerminated() != nil:
			started++
			if cs.State.GetTerminated().GetExitCode() == 0 {
				succeeded++
			} else {
				failed++
			}
		case cs.LastState.GetTerminated() != nil:
			started++ // waiting to restart
		}
		if !cs.GetReady() {
			unready = append(unready, spec.Name)
		}
	}
	n := len(specs)
	switch {
	case n > 0 && succeeded+failed == n && failed == 0:
		st.Phase = "Succeeded"
	case n > 0 && succeeded+failed == n:
		st.Phase = "Failed"
	case started == n && n > 0:
		st.Phase = "Running"
	}
	if initFailed {
		st.Phase = "Failed"
	}
	st.Conditions = conditions(st.Phase, incomplete, n > 0 && len(unready) == 0, unready)
	return st
}

// conditions are the pod conditions the agent owns, as the kubelet sets
// them: Initialized once every init container has succeeded,
// ContainersReady when every container is ready, and Ready the same (no
// readiness gates). A finished pod is not ready, with reason PodCompleted.
func conditions(phase string, incomplete []string, allReady bool, unready []string) []*skiffv1.Condition {
	ready := &skiffv1.Condition{Status: "True"}
	switch {
	case phase == "Succeeded" || phase == "Failed":
		ready = &skiffv1.Condition{Status: "False", Reason: "PodCompleted"}
	case !allReady:
		ready = &skiffv1.Condition{Status: "False", Reason: "ContainersNotReady", Message: fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " "))}
	}
	initialized := &skiffv1.Condition{Type: "Initialized", Status: "True"}
	switch {
	case len(incomplete) > 0:
		initialized = &skiffv1.Condition{Type: "Initialized", Status: "False", Reason: "ContainersNotInitialized",
			Message: fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(incomplete, " "))}
	case phase == "Succeeded" || phase == "Failed":
		initialized.Reason = "PodCompleted"
	}
	return []*skiffv1.Condition{
		initialized,
		{Type: "ContainersReady", Status: ready.Status, Reason: ready.Reason, Message: ready.Message},
		{Type: "Ready", Status: ready.Status, Reason: ready.Reason, Message: ready.Message},
	}
}

// mergeStatus puts the agent's view onto the stored status, keeping what
// others own (the scheduler's PodScheduled condition) and the transition
// times of conditions that did not change.
func mergeStatus(old, mine *skiffv1.PodStatus, now time.Time) *skiffv1.PodStatus {
	out := &skiffv1.PodStatus{
		Phase: mine.Phase, Reason: mine.Reason, Message: mine.Message,
		StartTime: mine.StartTime, ContainerStatuses: mine.ContainerStatuses, InitContainerStatuses: mine.InitContainerStatuses,
		PodIp: mine.PodIp, PodIps: mine.PodIps, HostIp: mine.HostIp,
	}
	prev := map[string]*skiffv1.Condition{}
	for _, c := range old.GetConditions() {
		prev[c.GetType()] = c
	}
	mineTypes := map[string]bool{}
	for _, c := range mine.Conditions {
		mineTypes[c.Type] = true
		c := &skiffv1.Condition{Type: c.Type, Status: c.Status, Reason: c.Reason, Message: c.Message}
		if p := prev[c.Type]; p != nil && p.Status == c.Status {
			c.LastTransitionTime = p.LastTransitionTime
		} else {
			c.LastTransitionTime = timestamppb.New(now)
		}
		out.Conditions = append(out.Conditions, c)
	}
	for _, c := range old.GetConditions() {
		if !mineTypes[c.GetType()] {
			out.Conditions = append(out.Conditions, c)
		}
	}
	return out
}

func waiting(reason, message string) *skiffv1.ContainerState {
	return &skiffv1.ContainerState{Waiting: &skiffv1.ContainerStateWaiting{Reason: reason, Message: message}}
}

func terminated(code int32, reason, message string) *skiffv1.ContainerState {
	return &skiffv1.ContainerState{Terminated: &skiffv1.ContainerStateTerminated{ExitCode: proto.Int32(code), Reason: reason, Message: message}}
}

func nanos(ns int64) *timestamppb.Timestamp {
	if ns == 0 {
		return nil
	}
	return timestamppb.New(time.Unix(0, ns))
}
