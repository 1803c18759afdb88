package oci

import (
	"context"
	"fmt"
	"time"

	skiffrt "skiff.dev/skiff/runtime"

	"golang.org/x/sys/unix"
)

// Stop sends SIGTERM to the container's init and SIGKILL once grace has
// passed (at once when grace <= 0, or when the container was never
// started). As for any PID 1, SIGTERM only reaches an init that handles
// it. The signals go through the init's pidfd, not `runc kill`: no
// process to start, and no pid that could have been reused.
//
// Stop waits for the exit until ctx ends; the kill at the end of grace
// happens even if ctx ends first. A later Stop with a shorter grace brings
// the kill forward. Idempotent.
func (c *Container) Stop(ctx context.Context, grace time.Duration) error {
	c.mu.Lock()
	switch {
	case c.status.State == skiffrt.StateExited:
		c.mu.Unlock()
		return nil
	case c.pidfd.f == nil:
		c.mu.Unlock()
		return fmt.Errorf("stop container %s: %w", c.id, skiffrt.ErrClosed)
	case c.status.State == skiffrt.StateCreated && !c.starting, grace <= 0:
		c.killLocked(skiffrt.ReasonError, "stopped")
	default:
		if !c.termSent {
			c.termSent = true
			if err := c.pidfd.signal(unix.SIGTERM); err != nil {
				c.log.Error("send SIGTERM to the container", "err", err)
			}
		}
		c.armKillLocked(grace)
	}
	c.mu.Unlock()
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop container %s: %w", c.id, ctx.Err())
	}
}

// armKillLocked makes sure the container is killed within grace from
// now. c.mu must be held.
func (c *Container) armKillLocked(grace time.Duration) {
	at := time.Now().Add(grace)
	if c.killTimer != nil {
		if !at.Before(c.killAt) {
			return
		}
		c.killTimer.Stop()
	}
	msg := fmt.Sprintf("stopped: did not exit within the %v grace period", grace)
	c.killAt = at
	c.killTimer = time.AfterFunc(grace, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.status.State != skiffrt.StateExited {
			c.killLocked(skiffrt.ReasonError, msg)
		}
	})
}
