package oci

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	skiffrt "skiff.dev/skiff/runtime"
)

// Remove deletes the container: `runc delete --force`, the rootfs
// unmounted, the bundle and the cgroup removed. A container that was
// created but never started is killed first; a running one is refused
// (ErrState). Idempotent.
func (c *Container) Remove(ctx context.Context) error {
	c.mu.Lock()
	if c.removed {
		c.mu.Unlock()
		return nil
	}
	state := c.status.State
	if state == skiffrt.StateRunning || c.starting && state != skiffrt.StateExited {
		c.mu.Unlock()
		return fmt.Errorf("remove container %s: %w: it is running", c.id, skiffrt.ErrState)
	}
	live := state == skiffrt.StateCreated && c.pidfd.f != nil
	if live {
		c.killLocked(skiffrt.ReasonError, "removed")
	}
	c.mu.Unlock()
	if live {
		select {
		case <-c.done:
		case <-ctx.Done():
			return fmt.Errorf("remove container %s: %w", c.id, ctx.Err())
		}
	}
	if err := c.r.removeBundle(ctx, c.id, c.cg); err != nil {
		return fmt.Errorf("remove container %s: %w", c.id, err)
	}
	c.mu.Lock()
	c.removed = true
	for _, rd := range c.readers {
		rd.Close()
	}
	c.mu.Unlock()
	c.r.untrack(c)
	return nil
}

// removeBundle deletes what a container holds on the node: runc's state,
// its rootfs mount, its bundle and its cgroup.
func (r *Runtime) removeBundle(ctx context.Context, id string, cg cgroup) error {
	if _, err := r.call(ctx, "delete", "--force", id); err != nil && !notExist(err) {
		return err
	}
	bundle := r.bundle(id)
	if err := unmountImageVolumes(bundle); err != nil {
		return err
	}
	if err := unmount(filepath.Join(bundle, "rootfs")); err != nil {
		return err
	}
	if err := os.RemoveAll(bundle); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return cg.remove()
}
