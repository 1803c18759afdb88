package cri

import (
	"context"
	"errors"
	"fmt"
	"os"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RemovePodSandbox removes a sandbox: it stops and removes its containers,
// deletes its network namespace and forgets it. It is idempotent: an
// unknown ID succeeds.
func (s *service) RemovePodSandbox(ctx context.Context, req *runtime.RemovePodSandboxRequest) (*runtime.RemovePodSandboxResponse, error) {
	sb, err := s.getSandbox(req.GetPodSandboxId())
	if errors.Is(err, errNotFound) {
		return &runtime.RemovePodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("remove pod sandbox: %w", err)
	}
	sb.mu.Lock()
	sb.removing = true
	sb.mu.Unlock()
	if err := s.stopSandbox(ctx, sb); err != nil {
		return nil, fmt.Errorf("remove pod sandbox: %w", err)
	}
	rec := sb.snapshot()
	for _, c := range s.containersOf(rec.ID) {
		if err := s.removeContainer(ctx, c); err != nil {
			return nil, fmt.Errorf("remove pod sandbox %s: %w", rec.ID, err)
		}
	}
	if err := os.RemoveAll(s.sandboxDir(rec.ID)); err != nil {
		return nil, fmt.Errorf("remove pod sandbox %s: %w", rec.ID, err)
	}
	if err := s.db.deleteSandbox(rec.ID); err != nil {
		return nil, fmt.Errorf("remove pod sandbox %s: %w", rec.ID, err)
	}
	s.mu.Lock()
	delete(s.sandboxes, rec.ID)
	if s.names[rec.nameKey()] == rec.ID {
		delete(s.names, rec.nameKey())
	}
	s.mu.Unlock()
	s.log.Info("pod sandbox removed", "sandbox", rec.ID, "pod", rec.Namespace+"/"+rec.Name)
	return &runtime.RemovePodSandboxResponse{}, nil
}
