package cri

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/coder/websocket"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffrt "skiff.dev/skiff/runtime"
)

// An exec session speaks Kubernetes' channel protocol (subprotocol
// v5.channel.k8s.io, or v4.channel.k8s.io): every binary message starts
// with its channel's byte. The client sends stdin (0) and terminal sizes
// (4, JSON {"Width":80,"Height":24}); the server sends stdout (1), stderr
// (2) and, once the command has exited, its status (3, JSON, as
// metav1.Status), then closes. In v5 the client ends stdin with a close
// message: 255, then the channel closed (0).

// Channels of the exec protocol.
const (
	chanStdin  byte = 0
	chanStdout byte = 1
	chanStderr byte = 2
	chanError  byte = 3
	chanResize byte = 4
	chanClose  byte = 255 // v5: the next byte is the channel closed
)

// execStatus is the status message of channel 3, as metav1.Status.
type execStatus struct {
	Status  string         `json:"status"`
	Message string         `json:"message,omitempty"`
	Reason  string         `json:"reason,omitempty"`
	Details *statusDetails `json:"details,omitempty"`
}

type statusDetails struct {
	Causes []statusCause `json:"causes,omitempty"`
}

type statusCause struct {
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// exitStatus is the status of a command that exited with code, or failed
// to run with err.
func exitStatus(code int32, err error) execStatus {
	switch {
	case err != nil:
		return execStatus{Status: "Failure", Reason: "InternalError", Message: err.Error()}
	case code == 0:
		return execStatus{Status: "Success"}
	}
	c := strconv.Itoa(int(code))
	return execStatus{
		Status: "Failure", Reason: "NonZeroExitCode",
		Message: "command terminated with non-zero exit code: exit status " + c,
		Details: &statusDetails{Causes: []statusCause{{Reason: "ExitCode", Message: c}}},
	}
}

// serveExec runs the command of an exec token, relaying its stdio over
// the WebSocket until it exits; a client that goes away kills it.
func (s *streamServer) serveExec(w http.ResponseWriter, r *http.Request) {
	s.serveStdio(w, r, streamExec)
}

// serveStdio serves a session of kind (exec, or attach: the same
// streams) over the WebSocket until its command exits or, for attach,
// the attach ends.
func (s *streamServer) serveStdio(w http.ResponseWriter, r *http.Request, kind streamKind) {
	p, c, done, ok := s.openSession(w, r, kind, []string{protocolV5, protocolV4})
	if !ok {
		return
	}
	defer done()
	defer c.CloseNow()
	req := p.stdio()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	if proto := c.Subprotocol(); proto != protocolV5 && proto != protocolV4 {
		c.Close(websocket.StatusPolicyViolation, "speak "+protocolV5+" or "+protocolV4)
		return
	}
	idle := newIdleTimer(cancel)
	defer idle.stop()
	var (
		pio     execIO
		stdinW  *io.PipeWriter
		resize  chan skiffrt.TerminalSize
		readEnd = make(chan struct{})
	)
	if req.stdin {
		pr, pw := io.Pipe()
		pio.stdin, stdinW = pr, pw
		defer pr.Close()
	}
	if req.tty {
		resize = make(chan skiffrt.TerminalSize, 1)
		pio.resize = resize
	}
	if req.stdout {
		pio.stdout = channelWriter{ctx: ctx, c: c, ch: chanStdout, idle: idle}
	}
	if req.stderr {
		pio.stderr = channelWriter{ctx: ctx, c: c, ch: chanStderr, idle: idle}
	}
	go func() {
		defer close(readEnd)
		s.readExec(ctx, c, stdinW, resize, idle)
		if stdinW != nil {
			stdinW.Close()
		}
		cancel() // the client went away: the command ends

	}()
	st := s.runStdio(ctx, p, pio)
	if ctx.Err() == nil {
		s.finish(ctx, c, st)
	}
	cancel()
	c.CloseNow()
	<-readEnd
}

// execIO is where an exec session's process reads and writes, whichever
// the transport; a nil member is not used.
type execIO struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	resize <-chan skiffrt.TerminalSize
}

// runExec runs the command of req with pio until it exits, or ctx ends
// and kills it, and returns the status to send the client. The container
// may have stopped since the token was made.
func (s *streamServer) runExec(ctx context.Context, req *runtime.ExecRequest, pio execIO) execStatus {
	ex, _, err := s.svc.execer("exec in", req.GetContainerId())
	if err != nil {
		return exitStatus(0, err)
	}
	code, err := ex.Exec(ctx, skiffrt.Process{Args: req.GetCmd(), TTY: req.GetTty(), Stdin: pio.stdin, Stdout: pio.stdout, Stderr: pio.stderr, Resize: pio.resize})
	if pr, ok := pio.stdin.(*io.PipeReader); ok {
		// Input the command no longer reads must not hold the reader of
		// the client's messages in a write to the pipe.
		pr.Close()
	}
	return exitStatus(code, err)
}

// pushSize hands size to resize: the latest size wins over one the
// process has not taken yet. Only one goroutine pushes to resize.
func pushSize(resize chan skiffrt.TerminalSize, size skiffrt.TerminalSize) {
	select {
	case <-resize:
	default:
	}
	resize <- size
}

// readExec reads the client's messages until it goes away: stdin, the
// close of stdin and terminal sizes.
func (s *streamServer) readExec(ctx context.Context, c *websocket.Conn, stdin *io.PipeWriter, resize chan skiffrt.TerminalSize, idle idleTimer) {
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			return
		}
		idle.touch()
		if len(msg) == 0 {
			continue
		}
		switch msg[0] {
		case chanStdin:
			if stdin != nil {
				if _, err := stdin.Write(msg[1:]); err != nil {
					stdin = nil // the command closed its stdin: drop the rest
				}
			}
		case chanResize:
			var size skiffrt.TerminalSize
			if resize == nil || json.Unmarshal(msg[1:], &size) != nil {
				continue
			}
			pushSize(resize, size)
		case chanClose:
			if len(msg) > 1 && msg[1] == chanStdin && stdin != nil {
				stdin.Close()
				stdin = nil
			}
		}
	}
}

// finish sends the command's status and closes the session.
func (s *streamServer) finish(ctx context.Context, c *websocket.Conn, st execStatus) {
	b, _ := json.Marshal(st)
	if err := send(ctx, c, chanError, b); err != nil {
		return
	}
	c.Close(websocket.StatusNormalClosure, "")
}

// channelWriter writes what it is given as messages of one channel.
type channelWriter struct {
	ctx  context.Context
	c    *websocket.Conn
	ch   byte
	idle idleTimer
}

// maxChunk bounds one message of output.
const maxChunk = 32 << 10

func (w channelWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), maxChunk)]
		if err := send(w.ctx, w.c, w.ch, chunk); err != nil {
			return n, errors.Join(io.ErrClosedPipe, err)
		}
		w.idle.touch()
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}
