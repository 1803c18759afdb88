package agent

import (
	"context"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"google.golang.org/protobuf/proto"

	"skiff.dev/skiff/control/api/events"
	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// replaceSandbox handles a pod whose sandbox came back not ready (its
// network namespace is gone, as after a reboot): nothing can be created in
// it, so, as the kubelet does, the worker stops and removes it, runs a new
// one, and creates the containers again, each with the next attempt
// number (a new log file; the restart is counted). Under OnFailure a
// container that had succeeded stays so. Under Never a pod whose
// containers were made is not run again: the old sandbox is adopted and
// its containers' ends decide the phase. It reports whether the pod now
// has a sandbox to go on with.
func (w *podWorker) replaceSandbox(ctx context.Context, old *runtimeapi.PodSandbox) bool {
	res, err := w.a.cfg.Runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{
		Filter: &runtimeapi.ContainerFilter{PodSandboxId: old.Id},
	})
	if err != nil {
		w.log.Warn("list the containers of a sandbox that is not ready", "sandbox", old.Id, "err", err)
		return false
	}
	isInit := map[string]bool{}
	for _, spec := range w.pod.GetSpec().GetInitContainers() {
		isInit[spec.Name] = true
	}
	// What each container had reached: its newest attempt and, when that
	// one has exited, how.
	type prior struct {
		attempt uint32
		exited  *runtimeapi.ContainerStatus
	}
	prev := map[string]prior{}
	allExited := len(res.Containers) > 0
	for _, ctr := range res.Containers {
		name, attempt := ctr.GetMetadata().GetName(), ctr.GetMetadata().GetAttempt()
		if p, ok := prev[name]; ok && p.attempt > attempt {
			continue
		}
		p := prior{attempt: attempt}
		if ctr.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED {
			if st, err := w.a.cfg.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ctr.Id}); err == nil {
				p.exited = st.GetStatus()
			}
		}
		allExited = allExited && p.exited != nil
		prev[name] = p
	}
	if allExited && w.pod.GetSpec().GetRestartPolicy() == "Never" {
		// Nothing will run again (the kubelet makes no new sandbox
		// then): how the containers ended decides the phase.
		w.adopt(ctx, old)
		return true
	}
	w.log.Info("sandbox is not ready: making a new one", "sandbox", old.Id)
	w.record(events.Normal, "SandboxChanged", "Pod sandbox changed, it will be killed and re-created.")
	if _, err := w.a.cfg.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: old.Id}); err != nil {
		w.log.Warn("stop a sandbox that is not ready", "sandbox", old.Id, "err", err)
		return false
	}
	if _, err := w.a.cfg.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: old.Id}); err != nil {
		w.log.Warn("remove a sandbox that is not ready", "sandbox", old.Id, "err", err)
		return false
	}
	// The pod's volumes stay: they are the pod's, not the sandbox's.
	w.sandboxID, w.netnsPath, w.podIPs, w.initialized = "", "", nil, false
	w.abandonStarts()
	for name, p := range prev {
		c := w.containerRun(name, isInit[name])
		c.stopProbes()
		c.id, c.starting, c.unstarted = "", nil, false
		if st := p.exited; st != nil {
			// Kept when it will not run again: an init container failed
			// under Never, a container done by restartPolicy.
			ended := &skiffv1.ContainerState{Terminated: &skiffv1.ContainerStateTerminated{
				ExitCode: proto.Int32(st.ExitCode), Reason: st.Reason, Message: st.Message,
				StartedAt: nanos(st.StartedAt), FinishedAt: nanos(st.FinishedAt),
			}}
			if (isInit[name] && st.ExitCode != 0 && !w.shouldRestart(c, st.ExitCode)) || (!isInit[name] && !w.shouldRestart(c, st.ExitCode)) {
				c.state, c.attempt, c.restarts = ended, p.attempt, p.attempt
				continue
			}
			c.last = ended
		}
		c.attempt, c.restarts = p.attempt+1, p.attempt+1
		c.backoffUntil = time.Time{}
		c.state = waiting("ContainerCreating", "")
	}
	return w.ensureSandbox(ctx)
}
