package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/control/api/events"
	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

func (w *podWorker) syncContainer(ctx context.Context, spec *skiffv1.Container, c *containerRun) {
	if c.failed {
		return
	}
	if c.id != "" {
		w.observe(ctx, spec, c)
		return
	}
	if w.doneForGood(c) {
		return
	}
	if !c.backoffUntil.IsZero() && w.a.now().Before(c.backoffUntil) {
		c.state = waiting("CrashLoopBackOff", fmt.Sprintf("back-off %s restarting failed container %s", c.backoff, spec.Name))
		return
	}
	imageRef, err := w.pullImage(ctx, spec.Image)
	if err != nil {
		if c.state.GetWaiting().GetReason() != "ErrImagePull" {
			w.record(events.Warning, "Failed", "Failed to pull image %q: %s", spec.Image, err)
		}
		c.state = waiting("ErrImagePull", err.Error())
		return
	}
	c.imageID = imageRef
	mounts, err := w.volumeMounts(spec)
	if err != nil {
		c.state = waiting("CreateContainerConfigError", err.Error())
		return
	}
	if c.attempt >= 2 {
		pruneRuns(filepath.Join(w.logDir(), spec.Name), c.attempt-1)
	}
	created, err := w.a.cfg.Runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: w.sandboxID,
		Config: withPorts(withResources(&runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: spec.Name, Attempt: c.attempt},
			Image:    &runtimeapi.ImageSpec{Image: spec.Image},
			Command:  spec.Command,
			Args:     spec.Args,
			Envs:     withServiceEnv(w.a.services.env(ctx, w.pod.GetMetadata().GetNamespace()), envs(spec.Env)),
			LogPath:  filepath.Join(spec.Name, fmt.Sprintf("%d.log", c.attempt)),
			Labels:   w.containerLabels(spec.Name),
			Mounts:   mounts,
			// A process namespace of its own, as the kubelet asks
			// without shareProcessNamespace, and the runtime's default
			// seccomp profile, as the kubelet's SeccompDefault asks (a
			// CRI config without one is unconfined).
			Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
				Seccomp:          &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
			}},
		}, w.pod, spec), spec),
		SandboxConfig: &runtimeapi.PodSandboxConfig{
			Metadata:     &runtimeapi.PodSandboxMetadata{Name: w.pod.Metadata.Name, Namespace: w.pod.Metadata.Namespace, Uid: w.uid},
			LogDirectory: w.logDir(),
			Labels:       w.labels(),
		},
	})
	if err != nil {
		msg := status.Convert(err).Message()
		if status.Code(err) == codes.InvalidArgument {
			// The module itself is bad: running it again cannot help.
			c.failed = true
			c.state = terminated(128, "CreateContainerError", msg)
			w.log.Warn("container cannot run", "container", spec.Name, "err", msg)
			w.record(events.Warning, "Failed", "Error: CreateContainerError: container %s: %s", spec.Name, msg)
			return
		}
		c.state = waiting("CreateContainerError", msg)
		return
	}
	w.record(events.Normal, "Created", "Created container %s", spec.Name)
	c.id = created.ContainerId // known from now on, so that a deletion can stop it
	c.state = waiting("ContainerCreating", "")
	w.startContainer(ctx, spec, c)
}

// startContainer starts the created container c.id. A start that does not
// return is left in flight when the pod is deleted meanwhile (its
// termination stops the container and the sandbox, and cancels the call
// once they are gone). A start that fails ends the container with reason
// StartError and exit code 128, keeping the error's message, as the
// kubelet shows it; it restarts after a back-off unless restartPolicy
// says otherwise.
func (w *podWorker) startContainer(ctx context.Context, spec *skiffv1.Container, c *containerRun) {
	if w.startCtx == nil {
		w.startCtx, w.cancelStart = context.WithCancel(ctx)
	}
	done := make(chan error, 1)
	id := c.id
	go func() {
		_, err := w.a.cfg.Runtime.StartContainer(w.startCtx, &runtimeapi.StartContainerRequest{ContainerId: id})
		done <- err
	}()
	var err error
	woken := false
wait:
	for {
		select {
		case err = <-done:
			break wait
		case <-ctx.Done():
			c.starting = done
			return
		case <-w.wake:
			woken = true
			if w.deletionPending() {
				c.starting = done
				w.poke()
				w.log.Warn("pod deleted while its container is starting: stopping it", "container", spec.Name)
				return
			}
		}
	}
	if woken {
		w.poke() // what woke the worker is still to be looked at
	}
	if err != nil {
		w.startFailed(ctx, spec, c, err)
		return
	}
	c.backoffUntil = time.Time{}
	w.log.Info("container started", "container", spec.Name, "attempt", c.attempt)
	w.record(events.Normal, "Started", "Started container %s", spec.Name)
	w.observe(ctx, spec, c)
}

// startFailed records a start error: the container ended with StartError.
func (w *podWorker) startFailed(ctx context.Context, spec *skiffv1.Container, c *containerRun, err error) {
	msg := status.Convert(err).Message()
	w.log.Warn("start container", "container", spec.Name, "err", msg)
	w.record(events.Warning, "Failed", "Error: StartError: container %s: %s", spec.Name, msg)
	_, _ = w.a.cfg.Runtime.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c.id})
	c.stopProbes()
	c.id = ""
	c.state = terminated(128, "StartError", msg)
	if w.shouldRestart(c, 128) {
		w.scheduleRestart(spec, c)
	}
}

// deletionPending reports whether the pod was deleted, or marked for
// deletion, since the worker last took its mailbox.
func (w *podWorker) deletionPending() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.deleted || w.next.GetMetadata().GetDeletionTimestamp() != nil
}

// abandonStarts cancels the StartContainer calls left in flight.
func (w *podWorker) abandonStarts() {
	if w.cancelStart != nil {
		w.cancelStart()
		w.startCtx, w.cancelStart = nil, nil
	}
}

func (w *podWorker) containerLabels(name string) map[string]string {
	l := w.labels()
	l[LabelContainerName] = name
	return l
}

// pullImage makes sure the image is on the node and returns its ID.
func (w *podWorker) pullImage(ctx context.Context, ref string) (string, error) {
	st, err := w.a.cfg.Images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err == nil && st.GetImage() != nil {
		w.record(events.Normal, "Pulled", "Container image %q already present on machine", ref)
		return st.GetImage().GetId(), nil
	}
	w.record(events.Normal, "Pulling", "Pulling image %q", ref)
	res, err := w.a.cfg.Images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		return "", fmt.Errorf("pull image %q: %s", ref, status.Convert(err).Message())
	}
	w.record(events.Normal, "Pulled", "Successfully pulled image %q", ref)
	return res.ImageRef, nil
}

func envs(in []*skiffv1.EnvVar) []*runtimeapi.KeyValue {
	out := make([]*runtimeapi.KeyValue, 0, len(in))
	for _, e := range in {
		out = append(out, &runtimeapi.KeyValue{Key: e.Name, Value: []byte(e.Value)})
	}
	return out
}
