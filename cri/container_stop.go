package cri

import (
	"context"
	"errors"
	"fmt"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffrt "skiff.dev/skiff/runtime"
)

// stopWait bounds how long a stop waits for an instance to die once it is
// killed (at once, or at the end of the grace period). Killing a Wasm
// instance takes effect at its next call or loop iteration, so this is only
// reached by a runtime bug.
const stopWait = 10 * time.Second

// maxGrace caps the grace period of StopContainer, so that grace plus
// stopWait stays a valid duration whatever timeout a client sends.
const maxGrace = 100 * 365 * 24 * time.Hour

// StopContainer stops a running container within req.Timeout seconds, as
// SIGTERM then SIGKILL would: a Wasm module is asked to stop by the end of
// file of its stdin, and if it returns within the timeout its own exit code
// and reason stand ("Completed" for 0, "Error" otherwise). If it is still
// running when the timeout ends, or the timeout is 0, it is killed: exit
// code 137, reason "Error", message "stopped" (for a timeout of 0) or
// "stopped: did not exit within the <timeout> grace period". The call
// returns once the container has exited. A created container becomes
// exited at once the same way (message "stopped"). It is idempotent (a
// second call with a shorter timeout brings the kill forward), and an
// unknown ID succeeds: the CRI spec says that stopping a container that is
// already stopped or gone must not be an error.
func (s *service) StopContainer(ctx context.Context, req *runtime.StopContainerRequest) (*runtime.StopContainerResponse, error) {
	c, err := s.getContainer(req.GetContainerId())
	if errors.Is(err, errNotFound) {
		return &runtime.StopContainerResponse{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stop container: %w", err)
	}
	if err := s.stopContainer(ctx, c, graceOf(req.GetTimeout())); err != nil {
		return nil, err
	}
	return &runtime.StopContainerResponse{}, nil
}

// graceOf turns a CRI stop timeout in seconds into a grace period.
func graceOf(seconds int64) time.Duration {
	if seconds <= 0 {
		return 0
	}
	if seconds >= int64(maxGrace/time.Second) {
		return maxGrace
	}
	return time.Duration(seconds) * time.Second
}

// stopContainer stops c, killing it if it runs after grace (at once for 0),
// and saves its exit.
func (s *service) stopContainer(ctx context.Context, c *container, grace time.Duration) error {
	c.mu.Lock()
	t := c.task
	if t == nil {
		// No instance in this process: a container created before a restart.
		if c.rec.State == containerCreated && !c.starting {
			c.rec.apply(skiffrt.Status{State: skiffrt.StateExited, ExitCode: skiffrt.ExitCodeStopped, Reason: skiffrt.ReasonError, Message: "stopped", FinishedAt: s.now()})
			err := s.db.putContainer(&c.rec)
			c.mu.Unlock()
			s.emit(runtime.ContainerEventType_CONTAINER_STOPPED_EVENT, c.rec.ID, c.rec.SandboxID)
			return err
		}
		c.mu.Unlock()
		if !c.starting {
			return nil
		}
		// A start is making the task: wait for it, then stop that.
		return s.waitStarted(ctx, c, grace)
	}
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, grace+stopWait)
	defer cancel()
	if err := t.Stop(ctx, grace); err != nil {
		return fmt.Errorf("stop container %s: %w", c.rec.ID, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed || c.task != t {
		return nil
	}
	c.rec.apply(t.Status())
	if err := s.db.putContainer(&c.rec); err != nil {
		return fmt.Errorf("stop container %s: %w", c.rec.ID, err)
	}
	if c.log != nil {
		c.log.Close()
		c.log = nil
	}
	return nil
}

// waitStarted polls until a start under way has made its task, then stops it.
func (s *service) waitStarted(ctx context.Context, c *container, grace time.Duration) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("stop container %s: %w", c.rec.ID, ctx.Err())
		case <-tick.C:
		}
		c.mu.Lock()
		t, starting := c.task, c.starting
		c.mu.Unlock()
		if t != nil || !starting {
			return s.stopContainer(ctx, c, grace)
		}
	}
}
