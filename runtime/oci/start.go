package oci

import (
	"context"
	"fmt"
	goruntime "runtime"
	"time"

	skiffrt "skiff.dev/skiff/runtime"

	"golang.org/x/sys/unix"
)

// Start runs `runc start`: the init execs the container's command. If it
// fails the container is killed and ends Exited, reason StartError.
func (c *Container) Start(ctx context.Context) error {
	c.mu.Lock()
	if c.status.State != skiffrt.StateCreated || c.starting {
		st := c.status.State
		c.mu.Unlock()
		return fmt.Errorf("start container %s: %w: it is %s", c.id, skiffrt.ErrState, st)
	}
	if c.detached {
		c.mu.Unlock()
		return fmt.Errorf("start container %s: %w", c.id, skiffrt.ErrClosed)
	}
	c.starting = true
	c.status.StartedAt = time.Now()
	c.mu.Unlock()

	_, err := c.r.call(ctx, "start", c.id)
	c.mu.Lock()
	if err != nil {
		c.status.StartedAt = time.Time{}
		if c.status.State == skiffrt.StateExited { // stopped meanwhile
			c.mu.Unlock()
			return fmt.Errorf("start container %s: %w", c.id, err)
		}
		c.startErr = err.Error()
		c.killLocked(skiffrt.ReasonStartError, err.Error())
		c.mu.Unlock()
		select { // the kill makes it end at once
		case <-c.done:
		case <-ctx.Done():
		}
		return fmt.Errorf("start container %s: %w", c.id, err)
	}
	if c.status.State == skiffrt.StateCreated {
		c.status.State = skiffrt.StateRunning
	}
	st := c.status
	if c.spec.CPUBudget > 0 && st.State == skiffrt.StateRunning {
		c.budgetTimer = time.AfterFunc(c.spec.CPUBudget, c.checkBudget)
	}
	c.mu.Unlock()
	if st.State == skiffrt.StateRunning {
		if err := c.saveStatus(); err != nil {
			c.log.Warn("record the container's start", "err", err)
		}
	}
	c.log.Debug("container started")
	return nil
}

// minBudgetCheck is the shortest wait between two checks of a CPU budget.
const minBudgetCheck = 10 * time.Millisecond

// checkBudget kills the container if it has used up its CPU budget, or
// checks again when it could have at the earliest (it may use every CPU).
func (c *Container) checkBudget() {
	used := c.Stats().CPUTime
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.status.State != skiffrt.StateRunning || c.detached {
		return
	}
	if used >= c.spec.CPUBudget {
		c.killLocked(skiffrt.ReasonCPUBudgetExceeded, fmt.Sprintf("CPU budget of %v used up (%v of CPU time)", c.spec.CPUBudget, used.Round(time.Millisecond)))
		return
	}
	c.budgetTimer.Reset(max((c.spec.CPUBudget-used)/time.Duration(goruntime.NumCPU()), minBudgetCheck))
}

// killLocked sends SIGKILL to the init; the first kill's reason and
// message stand. c.mu must be held.
func (c *Container) killLocked(reason, msg string) {
	if c.stopMsg == "" {
		c.stopReason, c.stopMsg = reason, msg
	}
	if c.pidfd.f == nil {
		return
	}
	if err := c.pidfd.signal(unix.SIGKILL); err != nil {
		c.log.Error("kill the container", "err", err)
	}
}
