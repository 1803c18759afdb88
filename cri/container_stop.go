package cri

import (
	"context"
	"fmt"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/runtime/wasm"
)

// stopWait bounds how long a stop waits for an instance to die. Killing a
// Wasm instance takes effect at its next call or loop iteration, so this is
// only reached by a runtime bug.
const stopWait = 10 * time.Second

// StopContainer kills a running container at once (a Wasm module has no
// SIGTERM to honour, so the timeout is not waited for): exit code 137,
// reason "Error", message "stopped". A created container becomes exited the
// same way. It is idempotent; an unknown ID is NotFound.
func (s *service) StopContainer(ctx context.Context, req *runtime.StopContainerRequest) (*runtime.StopContainerResponse, error) {
	c, err := s.getContainer(req.GetContainerId())
	if err != nil {
		return nil, fmt.Errorf("stop container: %w", err)
	}
	if err := s.stopContainer(ctx, c); err != nil {
		return nil, err
	}
	return &runtime.StopContainerResponse{}, nil
}

func (s *service) stopContainer(ctx context.Context, c *container) error {
	c.mu.Lock()
	t := c.task
	if t == nil {
		// No instance in this process: a container created before a restart.
		if c.rec.State == containerCreated && !c.starting {
			c.rec.apply(wasm.Status{State: wasm.StateExited, ExitCode: wasm.ExitCodeStopped, Reason: wasm.ReasonError, Message: "stopped", FinishedAt: s.now()})
			err := s.db.putContainer(&c.rec)
			c.mu.Unlock()
			return err
		}
		c.mu.Unlock()
		if !c.starting {
			return nil
		}
		// A start is making the task: wait for it, then stop that.
		return s.waitStarted(ctx, c)
	}
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, stopWait)
	defer cancel()
	if err := t.Stop(ctx); err != nil {
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
func (s *service) waitStarted(ctx context.Context, c *container) error {
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
			return s.stopContainer(ctx, c)
		}
	}
}
