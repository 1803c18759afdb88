package cri

import (
	"context"
	"errors"
	"fmt"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffrt "skiff.dev/skiff/runtime"
)

// ExecSync and Exec run a command in a running container through its
// runtime's Execer (runc exec for OCI containers). A container whose
// runtime cannot (a Wasm module is one program) is refused as
// Unimplemented, naming the runtime and saying why. Attach
// (streaming_attach.go) joins a running OCI container's stdio; a Wasm
// container is refused. PortForward works for every sandbox: it dials the
// port inside the sandbox's network namespace. Exec, Attach and
// PortForward return a URL of the streaming server (streaming.go). An
// unknown ID is NotFound.

// Bounds of ExecSync.
const (
	// maxExecSyncOutput caps each of stdout and stderr that ExecSync
	// returns, as the kubelet expects (16 MiB); the rest is dropped.
	maxExecSyncOutput = 16 << 20
	// maxExecSyncDuration bounds an ExecSync whose request sets no
	// timeout.
	maxExecSyncDuration = time.Hour
)

// ExecSync runs a command in a running container and returns its output
// and exit code once it has exited. The request's timeout (seconds; 0: at
// most maxExecSyncDuration) kills it when it passes: DeadlineExceeded.
func (s *service) ExecSync(ctx context.Context, req *runtime.ExecSyncRequest) (*runtime.ExecSyncResponse, error) {
	if len(req.GetCmd()) == 0 {
		return nil, fmt.Errorf("exec in container %s: %w: cmd is empty", req.GetContainerId(), errInvalidArgument)
	}
	ex, rec, err := s.execer("exec in", req.GetContainerId())
	if err != nil {
		return nil, err
	}
	timeout := maxExecSyncDuration
	if t := req.GetTimeout(); t > 0 {
		timeout = min(time.Duration(t)*time.Second, maxExecSyncDuration)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stdout, stderr := &cappedBuffer{max: maxExecSyncOutput}, &cappedBuffer{max: maxExecSyncOutput}
	code, err := ex.Exec(ctx, skiffrt.Process{Args: req.GetCmd(), Stdout: stdout, Stderr: stderr})
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("exec %q in container %s: %w: timeout %s passed; the command was killed", req.GetCmd()[0], rec.ID, context.DeadlineExceeded, timeout)
		}
		return nil, fmt.Errorf("exec %q in container %s: %w", req.GetCmd()[0], rec.ID, err)
	}
	return &runtime.ExecSyncResponse{Stdout: stdout.b, Stderr: stderr.b, ExitCode: code}, nil
}

// Exec checks an exec request and returns the streaming URL that runs it.
func (s *service) Exec(ctx context.Context, req *runtime.ExecRequest) (*runtime.ExecResponse, error) {
	if _, _, err := s.execer("exec in", req.GetContainerId()); err != nil {
		return nil, err
	}
	switch {
	case len(req.GetCmd()) == 0:
		return nil, fmt.Errorf("exec in container %s: %w: cmd is empty", req.GetContainerId(), errInvalidArgument)
	case req.GetTty() && req.GetStderr():
		return nil, fmt.Errorf("exec in container %s: %w: tty and stderr cannot both be true (a terminal carries both streams on stdout)", req.GetContainerId(), errInvalidArgument)
	case !req.GetStdin() && !req.GetStdout() && !req.GetStderr():
		return nil, fmt.Errorf("exec in container %s: %w: one of stdin, stdout and stderr must be true", req.GetContainerId(), errInvalidArgument)
	}
	if s.streams == nil {
		return nil, fmt.Errorf("exec in container %s: %w", req.GetContainerId(), errNoStreaming)
	}
	u, err := s.streams.url(pendingStream{kind: streamExec, exec: req})
	if err != nil {
		return nil, fmt.Errorf("exec in container %s: %w", req.GetContainerId(), err)
	}
	return &runtime.ExecResponse{Url: u}, nil
}

// PortForward checks that the sandbox is ready and returns the streaming
// URL that forwards to its ports (the ports are the URL's "port" query
// parameters, as the kubelet's; req.Port is not needed).
func (s *service) PortForward(ctx context.Context, req *runtime.PortForwardRequest) (*runtime.PortForwardResponse, error) {
	sb, err := s.getSandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, fmt.Errorf("port-forward to sandbox: %w", err)
	}
	rec := sb.snapshot()
	if rec.State != sandboxReady {
		return nil, fmt.Errorf("port-forward to sandbox %s: %w: it is not ready", rec.ID, errFailedPrecondition)
	}
	for _, p := range req.GetPort() {
		if p < 1 || p > 65535 {
			return nil, fmt.Errorf("port-forward to sandbox %s: %w: port %d is not a port number", rec.ID, errInvalidArgument, p)
		}
	}
	if s.streams == nil {
		return nil, fmt.Errorf("port-forward to sandbox %s: %w", rec.ID, errNoStreaming)
	}
	u, err := s.streams.url(pendingStream{kind: streamPortForward, sandbox: rec.ID})
	if err != nil {
		return nil, fmt.Errorf("port-forward to sandbox %s: %w", rec.ID, err)
	}
	return &runtime.PortForwardResponse{Url: u}, nil
}

// execer returns the Execer of running container id, or the error that
// says why a command cannot run in it.
func (s *service) execer(op, id string) (skiffrt.Execer, containerRecord, error) {
	c, err := s.getContainer(id)
	if err != nil {
		return nil, containerRecord{}, fmt.Errorf("%s container: %w", op, err)
	}
	c.mu.Lock()
	rec, t := c.rec, c.task
	if t != nil {
		rec.apply(t.Status())
	}
	c.mu.Unlock()
	handler := rec.handler()
	if t != nil {
		if _, ok := t.(skiffrt.Execer); !ok {
			return nil, rec, fmt.Errorf("%s container %s: %w", op, rec.ID, unsupportedExec(handler))
		}
	}
	if rec.State != containerRunning || t == nil {
		return nil, rec, fmt.Errorf("%s container %s: %w: it is %s, not running", op, rec.ID, errFailedPrecondition, rec.State)
	}
	return t.(skiffrt.Execer), rec, nil
}

// unsupportedExec is the refusal of exec in a container of the runtime of
// handler.
func unsupportedExec(handler string) error {
	if handler == "wasm" {
		return unsupportedError("not supported by the Wasm runtime: a Wasm module is one program, it cannot run another command in its container")
	}
	return unsupportedError(fmt.Sprintf("not supported by the %q runtime: it cannot run another command in its containers", handler))
}

// unsupportedError is a refusal that is runtime.ErrUnsupported, in its
// own words.
type unsupportedError string

func (e unsupportedError) Error() string { return string(e) }
func (e unsupportedError) Unwrap() error { return skiffrt.ErrUnsupported }

// cappedBuffer keeps the first max bytes written to it and drops the rest.
type cappedBuffer struct {
	max int
	b   []byte
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if room := c.max - len(c.b); room > 0 {
		c.b = append(c.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
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
