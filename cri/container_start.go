package cri

import (
	"context"
	"fmt"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// StartContainer starts a created container: it instantiates the module and
// runs _start, and returns once the instance runs. A container must be
// CREATED and its sandbox ready. If instantiation fails the container is
// EXITED with reason "StartError" and the call fails.
func (s *service) StartContainer(ctx context.Context, req *runtime.StartContainerRequest) (*runtime.StartContainerResponse, error) {
	c, err := s.getContainer(req.GetContainerId())
	if err != nil {
		return nil, fmt.Errorf("start container: %w", err)
	}
	sb, err := s.getSandbox(c.rec.SandboxID)
	if err != nil {
		return nil, fmt.Errorf("start container %s: %w", c.rec.ID, err)
	}
	sbRec := sb.snapshot()
	if sbRec.State != sandboxReady {
		return nil, fmt.Errorf("start container %s: %w: sandbox %s is not ready", c.rec.ID, errFailedPrecondition, sbRec.ID)
	}

	c.mu.Lock()
	rec := c.rec
	if c.task != nil {
		rec.apply(c.task.Status())
	}
	switch {
	case c.removed:
		c.mu.Unlock()
		return nil, fmt.Errorf("start container %s: %w: it is being removed", rec.ID, errFailedPrecondition)
	case c.starting || rec.State != containerCreated:
		c.mu.Unlock()
		state := string(rec.State)
		if c.starting {
			state = "starting"
		}
		return nil, fmt.Errorf("start container %s: %w: it is %s, not created", rec.ID, errFailedPrecondition, state)
	}
	c.starting = true
	t := c.task
	c.mu.Unlock()

	// No lock is held from here on: compiling (after a restart) and
	// instantiating run guest code (a module's start function).
	startErr := func() error {
		if t == nil { // created before a restart: make the task now
			img, err := s.images.Get(rec.ImageID)
			if err != nil {
				return err
			}
			l := (*containerLog)(nil)
			if rec.LogPath != "" {
				if l, _, err = openContainerLog(rec.LogPath, s.now, s.logs); err != nil {
					return err
				}
			}
			rt, err := s.runtimeOf(&rec)
			if err != nil {
				if l != nil {
					l.Close()
				}
				return err
			}
			spec, err := s.taskSpec(&rec, &sbRec, img, l)
			if err == nil {
				t, err = rt.Create(ctx, spec)
			}
			if err != nil {
				if l != nil {
					l.Close()
				}
				return err
			}
			c.mu.Lock()
			c.task, c.log = t, l
			c.mu.Unlock()
		}
		return t.Start(ctx)
	}()

	c.mu.Lock()
	c.starting = false
	if c.removed {
		c.mu.Unlock()
		return nil, fmt.Errorf("start container %s: %w: it was removed while starting", rec.ID, errFailedPrecondition)
	}
	if c.task != nil {
		c.rec.apply(c.task.Status())
	}
	if err := s.db.putContainer(&c.rec); err != nil {
		s.log.Error("save container state", "container", rec.ID, "err", err)
	}
	if startErr != nil {
		exited := c.rec.State == containerExited
		if c.log != nil && exited {
			c.log.Close()
			c.log = nil
		}
		c.mu.Unlock()
		if exited {
			s.emit(runtime.ContainerEventType_CONTAINER_STOPPED_EVENT, rec.ID, rec.SandboxID)
		}
		return nil, fmt.Errorf("start container %s: %w", rec.ID, startErr)
	}
	t = c.task
	c.mu.Unlock()
	// Started is announced before the exit watcher runs, so that a
	// subscriber sees started before stopped however soon the task ends.
	s.emit(runtime.ContainerEventType_CONTAINER_STARTED_EVENT, rec.ID, rec.SandboxID)
	c.mu.Lock()
	if !c.removed && c.task == t {
		s.watch(c, t)
	}
	c.mu.Unlock()
	s.log.Info("container started", "container", rec.ID, "sandbox", rec.SandboxID)
	return &runtime.StartContainerResponse{}, nil
}
