package agent

import (
	"context"
	"os"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/control/api/events"
	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// teardown stops and removes the pod's sandbox and its logs.
func (w *podWorker) teardown(ctx context.Context) {
	w.removeSandbox(ctx)
	if w.pod != nil {
		_ = os.RemoveAll(w.logDir())
	}
	w.log.Info("pod removed from node")
}

// release stops the sandbox of a pod that has finished and whose final
// status the API has, as the kubelet does: the network namespace goes, the
// containers' records and logs stay until the pod is deleted.
func (w *podWorker) release(ctx context.Context) {
	if w.released || w.sandboxID == "" || !terminal(w.reported.GetPhase()) {
		return
	}
	if _, err := w.a.cfg.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: w.sandboxID}); err != nil {
		w.log.Warn("stop the sandbox of a finished pod", "sandbox", w.sandboxID, "err", err)
		return
	}
	w.released = true
	w.log.Info("finished pod released its sandbox", "sandbox", w.sandboxID)
}

// terminate stops a pod that is being deleted: each running container gets
// what is left of the grace period to exit by itself before it is killed,
// then the sandbox goes, and the deletion is confirmed to the API, which
// then removes the pod.
func (w *podWorker) terminate(ctx context.Context) {
	if w.confirmed {
		return
	}
	m := w.pod.GetMetadata()
	grace := m.GetDeletionTimestamp().AsTime().Sub(w.a.now())
	if g := time.Duration(m.GetDeletionGracePeriodSeconds()) * time.Second; grace > g {
		grace = g
	}
	grace = max(grace, 0)
	if w.sandboxID == "" {
		if sb, err := w.findSandbox(ctx); err == nil && sb != nil {
			w.adopt(ctx, sb)
		}
	}
	var wg sync.WaitGroup
	for name, c := range w.containers {
		if c.id == "" || c.state.GetTerminated() != nil {
			continue
		}
		w.record(events.Normal, "Killing", "Stopping container %s", name)
		wg.Add(1)
		go func(name, id string) {
			defer wg.Done()
			// Whole seconds, rounded up: CRI counts the timeout in seconds.
			secs := int64((grace + time.Second - 1) / time.Second)
			if _, err := w.a.cfg.Runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: secs}); err != nil {
				w.log.Warn("stop container", "container", name, "err", err)
			}
		}(name, c.id)
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	// Report how the containers ended, as the kubelet does before the pod
	// goes, so that a watcher sees the exit codes.
	for _, spec := range append(slices.Clone(w.pod.GetSpec().GetInitContainers()), w.pod.GetSpec().GetContainers()...) {
		if c := w.containers[spec.Name]; c != nil && c.id != "" {
			w.observe(ctx, spec, c)
		}
	}
	w.report(ctx)
	w.removeSandbox(ctx)
	_, err := w.a.cfg.Pods.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{
		Namespace: m.GetNamespace(), Name: m.GetName(), Uid: w.uid, GracePeriodSeconds: proto.Int64(0),
	}))
	if err != nil && connect.CodeOf(err) != connect.CodeNotFound && connect.CodeOf(err) != connect.CodeAborted {
		w.log.Warn("confirm pod deletion", "err", err)
		return
	}
	w.confirmed = true
	w.log.Info("pod stopped; deletion confirmed")
}

// removeSandbox stops and removes the pod's sandbox, if it has one.
func (w *podWorker) removeSandbox(ctx context.Context) {
	if w.sandboxID == "" {
		if sb, err := w.findSandbox(ctx); err == nil && sb != nil {
			w.sandboxID = sb.Id
		}
	}
	if w.sandboxID == "" {
		return
	}
	if _, err := w.a.cfg.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: w.sandboxID}); err != nil {
		w.log.Warn("stop sandbox", "sandbox", w.sandboxID, "err", err)
	}
	if _, err := w.a.cfg.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: w.sandboxID}); err != nil {
		w.log.Warn("remove sandbox", "sandbox", w.sandboxID, "err", err)
		return
	}
	w.sandboxID, w.netnsPath, w.initialized = "", "", false
	w.abandonStarts() // a start left in flight has nothing left to start
	w.removeVolumes()
	for _, c := range w.containers {
		c.stopProbes()
		c.id = ""
	}
}
