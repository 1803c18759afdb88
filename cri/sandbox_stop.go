package cri

import (
	"context"
	"errors"
	"fmt"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// StopPodSandbox kills every container of the sandbox at once (the kubelet
// stops containers with their grace period through StopContainer before it
// stops the sandbox), tears down its network and deletes its network
// namespace, and ends the holder of its PID namespace, if it has one; the
// sandbox is then NotReady. It is idempotent, and an unknown
// ID succeeds: the CRI spec says that stopping a sandbox that is already
// gone must not be an error (the kubelet retries a stop after a remove).
func (s *service) StopPodSandbox(ctx context.Context, req *runtime.StopPodSandboxRequest) (*runtime.StopPodSandboxResponse, error) {
	sb, err := s.getSandbox(req.GetPodSandboxId())
	if errors.Is(err, errNotFound) {
		return &runtime.StopPodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stop pod sandbox: %w", err)
	}
	if err := s.stopSandbox(ctx, sb); err != nil {
		return nil, err
	}
	return &runtime.StopPodSandboxResponse{}, nil
}

func (s *service) stopSandbox(ctx context.Context, sb *sandbox) error {
	// NotReady first: CreateContainer checks it, so no container is added
	// to the sandbox while its containers are being stopped.
	sb.mu.Lock()
	sb.rec.State = sandboxNotReady
	rec := sb.rec
	sb.mu.Unlock()

	var errs []error
	for _, c := range s.containersOf(rec.ID) {
		if err := s.stopContainer(ctx, c, 0); err != nil {
			errs = append(errs, err)
		}
	}
	s.setHostPorts(rec.ID, nil).close()
	if rec.NetNSPath != "" {
		if err := s.network.Teardown(ctx, rec.cniID(), rec.NetNSPath); err != nil {
			errs = append(errs, fmt.Errorf("tear down pod network: %w", err))
		} else if err := s.namespaces.Delete(rec.NetNSPath); err != nil {
			errs = append(errs, err)
		} else if rec.CNIID != "" && s.attached != nil {
			// The claim on the spare's ID lasts as long as the pin.
			if err := s.attached.Release(rec.ID); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := stopPIDHolder(ctx, &rec); err != nil {
		errs = append(errs, err)
	}
	sb.mu.Lock()
	sb.rec.PIDHolder = rec.PIDHolder
	err := s.db.putSandbox(&sb.rec)
	sb.mu.Unlock()
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop pod sandbox %s: %w", rec.ID, err)
	}
	s.log.Info("pod sandbox stopped", "sandbox", rec.ID, "pod", rec.Namespace+"/"+rec.Name)
	return nil
}
