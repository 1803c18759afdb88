package cri

import (
	"context"
	"fmt"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ExecSync, Exec, Attach and PortForward are refused for what runs here
// today, a Wasm module, naming the container and saying why, instead of
// gRPC's bare "unknown method": a module is one program and cannot run a
// second command; its stdin is its stop signal and it has no terminal, so
// there is nothing to attach to (its output is in its log); and its ports
// are served in the pod's network namespace, where port-forwarding needs
// the streaming server that OCI containers will bring. An unknown ID is
// NotFound.

func (s *service) ExecSync(ctx context.Context, req *runtime.ExecSyncRequest) (*runtime.ExecSyncResponse, error) {
	return nil, s.refuseExec("exec in", req.GetContainerId(), "a Wasm module is one program: it cannot run another command in its container")
}

func (s *service) Exec(ctx context.Context, req *runtime.ExecRequest) (*runtime.ExecResponse, error) {
	return nil, s.refuseExec("exec in", req.GetContainerId(), "a Wasm module is one program: it cannot run another command in its container")
}

func (s *service) Attach(ctx context.Context, req *runtime.AttachRequest) (*runtime.AttachResponse, error) {
	return nil, s.refuseExec("attach to", req.GetContainerId(), "a Wasm module has no terminal, and its stdin is its stop signal; read its output with the container's log")
}

func (s *service) PortForward(ctx context.Context, req *runtime.PortForwardRequest) (*runtime.PortForwardResponse, error) {
	sb, err := s.getSandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, fmt.Errorf("port-forward to sandbox: %w", err)
	}
	return nil, fmt.Errorf("port-forward to sandbox %s: %w: this node has no streaming server yet; its containers' ports listen in the pod's network namespace", sb.snapshot().ID, errUnimplemented)
}

// refuseExec is the error of an exec-like call on container id.
func (s *service) refuseExec(op, id, why string) error {
	c, err := s.getContainer(id)
	if err != nil {
		return fmt.Errorf("%s container: %w", op, err)
	}
	return fmt.Errorf("%s container %s: %w: %s", op, c.snapshot().ID, errUnimplemented, why)
}

// ReopenContainerLog opens a running container's log file again, creating
// it, after someone moved it away (the kubelet's log rotation). A container
// that is not running, or has no log, is FailedPrecondition, and no file
// is created.
func (s *service) ReopenContainerLog(ctx context.Context, req *runtime.ReopenContainerLogRequest) (*runtime.ReopenContainerLogResponse, error) {
	c, err := s.getContainer(req.GetContainerId())
	if err != nil {
		return nil, fmt.Errorf("reopen container log: %w", err)
	}
	c.mu.Lock()
	rec, l := c.rec, c.log
	if c.task != nil {
		rec.apply(c.task.Status())
	}
	c.mu.Unlock()
	switch {
	case rec.State != containerRunning:
		return nil, fmt.Errorf("reopen log of container %s: %w: it is %s, not running", rec.ID, errFailedPrecondition, rec.State)
	case l == nil:
		return nil, fmt.Errorf("reopen log of container %s: %w: it has no log (its sandbox or config set no log path)", rec.ID, errFailedPrecondition)
	}
	if err := l.reopen(); err != nil {
		return nil, fmt.Errorf("reopen log of container %s: %w", rec.ID, err)
	}
	return &runtime.ReopenContainerLogResponse{}, nil
}
