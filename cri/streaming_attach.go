package cri

import (
	"context"
	"fmt"
	"io"
	"net/http"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffrt "skiff.dev/skiff/runtime"
)

// Attach joins the stdio of a running container whose runtime can
// (runtime.Attacher: runc's), as containerd's: the session gets the
// container's output from then on (its log gets it too), its stdin goes
// to the container's stdin if the container was created with stdin
// (ContainerConfig.stdin; otherwise it is dropped), and, for a container
// created with tty, its terminal sizes resize the container's terminal.
// The session speaks the exec protocols (WebSocket and SPDY) and ends with
// status Success when the container exits or the client's stdin ends
// (for a stdin_once container without a terminal, the container's stdin
// is then closed and the session lasts until it exits). A Wasm container
// is refused as Unimplemented: its stdin is its stop signal and its
// output is in its log.

// Attach checks an attach request and returns the streaming URL that
// serves it.
func (s *service) Attach(ctx context.Context, req *runtime.AttachRequest) (*runtime.AttachResponse, error) {
	id := req.GetContainerId()
	if _, _, err := s.attacher(id); err != nil {
		return nil, err
	}
	switch {
	case req.GetTty() && req.GetStderr():
		return nil, fmt.Errorf("attach to container %s: %w: tty and stderr cannot both be true (a terminal carries both streams on stdout)", id, errInvalidArgument)
	case !req.GetStdin() && !req.GetStdout() && !req.GetStderr():
		return nil, fmt.Errorf("attach to container %s: %w: one of stdin, stdout and stderr must be true", id, errInvalidArgument)
	}
	if s.streams == nil {
		return nil, fmt.Errorf("attach to container %s: %w", id, errNoStreaming)
	}
	u, err := s.streams.url(pendingStream{kind: streamAttach, attach: req})
	if err != nil {
		return nil, fmt.Errorf("attach to container %s: %w", id, err)
	}
	return &runtime.AttachResponse{Url: u}, nil
}

// attacher returns the Attacher of running container id, or the error
// that says why it cannot be attached to.
func (s *service) attacher(id string) (skiffrt.Attacher, containerRecord, error) {
	c, err := s.getContainer(id)
	if err != nil {
		return nil, containerRecord{}, fmt.Errorf("attach to container: %w", err)
	}
	c.mu.Lock()
	rec, t := c.rec, c.task
	if t != nil {
		rec.apply(t.Status())
	}
	c.mu.Unlock()
	if t != nil {
		if _, ok := t.(skiffrt.Attacher); !ok {
			return nil, rec, fmt.Errorf("attach to container %s: %w", rec.ID, unsupportedAttach(rec.handler()))
		}
	}
	if rec.State != containerRunning || t == nil {
		return nil, rec, fmt.Errorf("attach to container %s: %w: it is %s, not running", rec.ID, errFailedPrecondition, rec.State)
	}
	return t.(skiffrt.Attacher), rec, nil
}

// unsupportedAttach is the refusal of attach to a container of the
// runtime of handler.
func unsupportedAttach(handler string) error {
	if handler == "wasm" {
		return unsupportedError("not supported by the Wasm runtime: a Wasm module has no terminal to attach to (its stdin is its stop signal); its output is in the container's log")
	}
	return unsupportedError(fmt.Sprintf("not supported by the %q runtime: it has no terminal to attach to; its output is in the container's log", handler))
}

// stdioRequest is what an exec or attach session relays.
type stdioRequest struct {
	container                  string
	stdin, stdout, stderr, tty bool
}

// stdio is the streams of p's exec or attach request.
func (p pendingStream) stdio() stdioRequest {
	if p.kind == streamAttach {
		r := p.attach
		return stdioRequest{container: r.GetContainerId(), stdin: r.GetStdin(), stdout: r.GetStdout(), stderr: r.GetStderr(), tty: r.GetTty()}
	}
	r := p.exec
	return stdioRequest{container: r.GetContainerId(), stdin: r.GetStdin(), stdout: r.GetStdout(), stderr: r.GetStderr(), tty: r.GetTty()}
}

// runStdio runs the exec or attach of p with pio and returns the status
// to send the client.
func (s *streamServer) runStdio(ctx context.Context, p pendingStream, pio execIO) execStatus {
	if p.kind == streamAttach {
		return s.runAttach(ctx, p.attach, pio)
	}
	return s.runExec(ctx, p.exec, pio)
}

// runAttach attaches pio to the container of req until the attach ends
// (see Attach), and returns the status to send the client: Success, or
// the error that ended it. The container may have stopped since the token
// was made.
func (s *streamServer) runAttach(ctx context.Context, req *runtime.AttachRequest, pio execIO) execStatus {
	at, _, err := s.svc.attacher(req.GetContainerId())
	if err != nil {
		return exitStatus(0, err)
	}
	err = at.Attach(ctx, skiffrt.AttachIO{Stdin: pio.stdin, Stdout: pio.stdout, Stderr: pio.stderr, Resize: pio.resize})
	if pr, ok := pio.stdin.(*io.PipeReader); ok {
		// Input the container no longer takes must not hold the reader
		// of the client's messages in a write to the pipe.
		pr.Close()
	}
	return exitStatus(0, err)
}

// serveAttach serves an attach token over the WebSocket.
func (s *streamServer) serveAttach(w http.ResponseWriter, r *http.Request) {
	s.serveStdio(w, r, streamAttach)
}

// serveAttachSPDY serves an attach token over SPDY.
func (s *streamServer) serveAttachSPDY(w http.ResponseWriter, r *http.Request) {
	s.serveStdioSPDY(w, r, streamAttach)
}
