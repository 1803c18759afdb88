package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	skiffrt "skiff.dev/skiff/runtime"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Adopt takes over container spec.ID that an earlier process created:
// with an exit recorded in its bundle, it is Exited with it; with runc
// saying it is created or running, it is Created or Running and watched
// through a pidfd (its init is no longer this process's child unless it
// was orphaned to it, so its exit status is usually unknown: ExitCodeUnknown,
// or OOMKilled when its cgroup says so); otherwise it exited unwitnessed.
// Output still buffered in its FIFOs and all output from now on goes to
// spec.Stdout and spec.Stderr. Its stdin FIFO, if it has one, is reopened
// for attach sessions (a StdinOnce container's stdin reached end of file
// when the earlier process ended). A TTY container's terminal is not
// recovered: it lived in the earlier process, and hung up with it (see
// attach.go); such a container cannot be attached to and its output is
// lost. No bundle: ErrNotFound.
func (r *Runtime) Adopt(ctx context.Context, spec skiffrt.ContainerSpec) (skiffrt.Container, error) {
	c, err := r.adopt(ctx, spec)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (r *Runtime) adopt(ctx context.Context, spec skiffrt.ContainerSpec) (*Container, error) {
	if !validID.MatchString(spec.ID) || spec.ID == "." || spec.ID == ".." {
		return nil, fmt.Errorf("adopt container %s: %w: bad id", spec.ID, skiffrt.ErrNotFound)
	}
	bundle := r.bundle(spec.ID)
	if _, err := os.Stat(bundle); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("adopt container %s: %w", spec.ID, skiffrt.ErrNotFound)
	}
	cgPath := cgroupsPath(r.cgroupParent, spec.ID)
	var proc specs.Process
	if b, err := os.ReadFile(filepath.Join(bundle, "config.json")); err == nil {
		var s specs.Spec
		if err := json.Unmarshal(b, &s); err == nil && s.Process != nil && s.Linux != nil {
			cgPath, proc = s.Linux.CgroupsPath, *s.Process
		}
	}
	c := newContainer(r, spec, cgPath)
	c.proc = proc
	if err := r.track(c); err != nil {
		return nil, fmt.Errorf("adopt container %s: %w", spec.ID, err)
	}
	saved, haveSaved, err := loadStatus(bundle)
	if err != nil {
		c.log.Warn("read the container's recorded status", "err", err)
	}
	if haveSaved && saved.State == skiffrt.StateExited {
		c.adoptExited(saved)
		return c, nil
	}
	release := r.reaper.hold()
	defer release()
	st, err := r.state(ctx, spec.ID)
	if err != nil && !notExist(err) {
		r.untrack(c)
		return nil, fmt.Errorf("adopt container %s: %w", spec.ID, err)
	}
	var p pidfd
	if err == nil && st.Status != "stopped" && st.Pid > 0 {
		p, err = openPidfd(st.Pid)
		if err != nil {
			p = pidfd{} // exited since runc looked
		}
	}
	unknown := skiffrt.Status{StartedAt: saved.StartedAt}
	if p.f == nil {
		code, reason, msg := c.classify(exitStatus{})
		unknown.State, unknown.ExitCode, unknown.Reason, unknown.Message = skiffrt.StateExited, code, reason, msg
		unknown.FinishedAt = time.Now()
		c.adoptExited(unknown)
		return c, nil
	}
	r.reaper.claim(st.Pid)
	release()
	rout, rerr, err := openFIFOReaders(bundle)
	if err != nil {
		c.log.Warn("reopen the container's output", "err", err)
	}
	stdin, err := reopenStdin(bundle)
	if err != nil {
		c.log.Warn("reopen the container's stdin", "err", err)
	}
	c.att.mu.Lock()
	c.att.stdin = stdin
	c.att.mu.Unlock()
	c.spec.Stdin = c.spec.Stdin || stdin != nil
	c.mu.Lock()
	c.pidfd = p
	c.status = skiffrt.Status{State: skiffrt.StateCreated}
	if st.Status != "created" {
		c.status = skiffrt.Status{State: skiffrt.StateRunning, StartedAt: saved.StartedAt}
		if c.spec.CPUBudget > 0 {
			c.budgetTimer = time.AfterFunc(minBudgetCheck, c.checkBudget)
		}
	}
	if rout != nil {
		c.copyOutput(rout, rerr, nil)
	}
	c.mu.Unlock()
	go c.watch(p, st.Pid)
	c.log.Debug("container adopted", "state", st.Status, "pid", st.Pid)
	return c, nil
}

// adoptExited makes c an exited container with status st, after copying
// out what is left in its FIFOs.
func (c *Container) adoptExited(st skiffrt.Status) {
	if rout, rerr, err := openFIFOReaders(c.bundle); err == nil {
		c.mu.Lock()
		c.copyOutput(rout, rerr, nil)
		c.mu.Unlock()
		copied := make(chan struct{})
		go func() { c.copiers.Wait(); close(copied) }()
		t := time.NewTimer(copyWait)
		select {
		case <-copied:
		case <-t.C:
		}
		t.Stop()
	}
	c.status = skiffrt.Status{State: skiffrt.StateCreated}
	close(c.watcherDone)
	c.finishWith(st)
}
