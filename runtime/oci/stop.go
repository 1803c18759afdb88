package oci

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
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
			pid, _ := c.pidfd.pid()
			caught, _ := termCaught(pid)
			if err := c.pidfd.signal(unix.SIGTERM); err != nil {
				c.log.Error("send SIGTERM to the container", "err", err)
			}
			if !caught && pid > 0 && grace > 0 {
				go c.termWhenCaught(pid, time.Now().Add(grace))
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

// termWhenCaught sends SIGTERM again once the init handles it. An init
// drops a signal it has no handler for, so one stopped just after it
// started (a shell about to exec a program that then installs its
// handler) would otherwise miss the request and wait out the whole grace
// period. An init that never handles SIGTERM (a plain sleep) gets one
// signal, as under containerd. It polls the init's caught-signal mask,
// ever less often, until the container ends or until.
func (c *Container) termWhenCaught(pid int, until time.Time) {
	wait := 5 * time.Millisecond
	for time.Now().Before(until) {
		t := time.NewTimer(wait)
		select {
		case <-c.done:
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, 500*time.Millisecond)
		caught, err := termCaught(pid)
		if err != nil {
			return // gone
		}
		if caught {
			c.mu.Lock()
			if c.status.State != skiffrt.StateExited && c.pidfd.f != nil {
				if err := c.pidfd.signal(unix.SIGTERM); err != nil {
					c.log.Warn("send SIGTERM again to the container", "err", err)
				}
			}
			c.mu.Unlock()
			return
		}
	}
}

// termCaught reports whether process pid has a handler for SIGTERM: bit
// 15 of the SigCgt mask in /proc/<pid>/status. runc's init, which handles
// every signal (it is a Go program) until it execs the container's
// process a moment after `runc start` returns, does not count.
func termCaught(pid int) (bool, error) {
	if pid <= 0 {
		return false, fmt.Errorf("no pid")
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Name:"); ok && strings.HasPrefix(strings.TrimSpace(v), "runc:") {
			return false, nil
		}
		if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false, err
			}
			return mask&(1<<(unix.SIGTERM-1)) != 0, nil
		}
	}
	return false, fmt.Errorf("/proc/%d/status has no SigCgt", pid)
}
