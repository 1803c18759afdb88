package cri

import (
	"context"
	"errors"
	"fmt"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RemoveContainer removes a container, killing it first if it runs. Its
// log file stays (the kubelet owns log rotation and removal). It is
// idempotent: an unknown ID succeeds.
func (s *service) RemoveContainer(ctx context.Context, req *runtime.RemoveContainerRequest) (*runtime.RemoveContainerResponse, error) {
	c, err := s.getContainer(req.GetContainerId())
	if errors.Is(err, errNotFound) {
		return &runtime.RemoveContainerResponse{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("remove container: %w", err)
	}
	if err := s.removeContainer(ctx, c); err != nil {
		return nil, err
	}
	return &runtime.RemoveContainerResponse{}, nil
}

func (s *service) removeContainer(ctx context.Context, c *container) error {
	if err := s.stopContainer(ctx, c, 0); err != nil {
		return fmt.Errorf("remove container %s: %w", c.rec.ID, err)
	}
	c.mu.Lock()
	c.removed = true
	if c.log != nil {
		c.log.Close()
		c.log = nil
	}
	t := c.task
	rec := c.rec
	seen := c.exitSeen
	c.mu.Unlock()
	if seen != nil {
		// Let the exit watcher announce the stop before the delete.
		select {
		case <-seen:
		case <-ctx.Done():
		}
	}
	if t != nil {
		// Stopped above, unless a start raced in between: stop again.
		if err := t.Stop(ctx, 0); err != nil {
			return fmt.Errorf("remove container %s: %w", rec.ID, err)
		}
		// Its rootfs, bundle and cgroup (OCI) go before its record.
		if err := t.Remove(ctx); err != nil {
			return fmt.Errorf("remove container %s: %w", rec.ID, err)
		}
	}
	if err := s.db.deleteContainer(rec.ID); err != nil {
		return fmt.Errorf("remove container %s: %w", rec.ID, err)
	}
	s.mu.Lock()
	delete(s.containers, rec.ID)
	if s.names[rec.nameKey()] == rec.ID {
		delete(s.names, rec.nameKey())
	}
	s.mu.Unlock()
	s.emit(runtime.ContainerEventType_CONTAINER_DELETED_EVENT, rec.ID, rec.SandboxID)
	s.log.Info("container removed", "container", rec.ID, "sandbox", rec.SandboxID)
	return nil
}
