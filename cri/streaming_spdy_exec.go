package cri

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/moby/spdystream"

	skiffrt "skiff.dev/skiff/runtime"
)

// An exec session over SPDY speaks the kubelet's remote command protocol:
// the client creates one stream per role, by its streamType header: error
// (always), stdin, stdout and stderr (as the Exec request asked) and, for
// a terminal, resize (v3 and later), whose JSON lines
// ({"Width":80,"Height":24}) are the terminal's sizes. Once every stream
// has arrived the command runs; when it has exited, stdout and stderr end
// and the error stream carries its status: in v4 (and v5, which is v4 over
// SPDY) as JSON metav1.Status, the exit code in a NonZeroExitCode cause;
// before v4 as text, and nothing on success. A client that creates no
// streams within spdyStreamWait, or goes away, ends the session.

// Older protocols of exec that SPDY clients may ask for.
const (
	protocolV3 = "v3.channel.k8s.io"
	protocolV2 = "v2.channel.k8s.io"
	protocolV1 = "channel.k8s.io"
)

// spdyExecProtocols are the protocols of exec over SPDY, in the server's
// order (the client's preference chooses).
var spdyExecProtocols = []string{protocolV5, protocolV4, protocolV3, protocolV2, protocolV1}

// Roles of SPDY streams, by their streamType header.
const (
	streamTypeError  = "error"
	streamTypeStdin  = "stdin"
	streamTypeStdout = "stdout"
	streamTypeStderr = "stderr"
	streamTypeResize = "resize"
	streamTypeData   = "data"
)

// maxResizeLine bounds one line of the resize stream.
const maxResizeLine = 4 << 10

// serveExecSPDY runs the command of an exec token, relaying its stdio over
// SPDY streams until it exits; a client that goes away kills it.
func (s *streamServer) serveExecSPDY(w http.ResponseWriter, r *http.Request) {
	s.serveStdioSPDY(w, r, streamExec)
}

// serveStdioSPDY serves a session of kind (exec, or attach: the same
// streams) over SPDY until its command exits or, for attach, the attach
// ends.
func (s *streamServer) serveStdioSPDY(w http.ResponseWriter, r *http.Request, kind streamKind) {
	proto, ok := negotiate(w, r, spdyExecProtocols)
	if !ok {
		return
	}
	p, done, ok := s.admit(w, r, kind)
	if !ok {
		return
	}
	defer done()
	req := p.stdio()
	want := map[string]bool{streamTypeError: true}
	for typ, on := range map[string]bool{
		streamTypeStdin:  req.stdin,
		streamTypeStdout: req.stdout,
		streamTypeStderr: req.stderr,
		streamTypeResize: req.tty && proto != protocolV2 && proto != protocolV1,
	} {
		if on {
			want[typ] = true
		}
	}
	ss, err := s.upgradeSPDY(w, proto, len(want), func(st *spdystream.Stream) error {
		if typ := st.Headers().Get(headerStreamType); !want[typ] {
			return fmt.Errorf("unexpected stream type %q", typ)
		}
		return nil
	})
	if err != nil {
		s.log.Debug("streaming: SPDY upgrade failed", "kind", kind, "err", err)
		return
	}
	defer ss.close()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	watchSPDY(ctx, cancel, ss)

	streams, err := awaitStreams(ctx, ss, want)
	if err != nil {
		s.log.Debug("streaming: SPDY session", "kind", kind, "container", req.container, "err", err)
		return
	}
	var (
		pio    execIO
		stdinR *io.PipeReader
		wg     sync.WaitGroup
	)
	if st := streams[streamTypeStdin]; st != nil {
		pr, pw := io.Pipe()
		pio.stdin, stdinR = pr, pr
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := io.Copy(pw, st) // EOF: the client closed stdin
			pw.CloseWithError(err)
		}()
	}
	if st := streams[streamTypeStdout]; st != nil {
		pio.stdout = streamWriter{st}
	}
	if st := streams[streamTypeStderr]; st != nil {
		pio.stderr = streamWriter{st}
	}
	if req.tty {
		resize := make(chan skiffrt.TerminalSize, 1)
		pio.resize = resize
		if st := streams[streamTypeResize]; st != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				readSizes(st, resize)
			}()
		}
	}
	status := s.runStdio(ctx, p, pio)
	if ctx.Err() == nil {
		// Output ends, then the status comes, as the kubelet's.
		for _, typ := range []string{streamTypeStdout, streamTypeStderr} {
			if st := streams[typ]; st != nil {
				st.Close()
			}
		}
		if err := writeExecStatus(streams[streamTypeError], proto, status); err != nil {
			s.log.Debug("streaming: SPDY session status", "kind", kind, "container", req.container, "err", err)
		}
		streams[streamTypeError].Close()
	}
	cancel()
	ss.close() // resets stdin and resize: their readers end
	if stdinR != nil {
		stdinR.Close() // the copy of stdin ends too, if the command left it unread
	}
	wg.Wait()
}

// awaitStreams waits until a stream of every role in want has arrived. A
// second stream of a role is reset.
func awaitStreams(ctx context.Context, ss *spdySession, want map[string]bool) (map[string]*spdystream.Stream, error) {
	timer := time.NewTimer(spdyStreamWait)
	defer timer.Stop()
	got := map[string]*spdystream.Stream{}
	for len(got) < len(want) {
		select {
		case st := <-ss.arrived:
			typ := st.Headers().Get(headerStreamType)
			if got[typ] != nil {
				ss.forget(st)
				continue
			}
			got[typ] = st
		case <-timer.C:
			return nil, fmt.Errorf("timed out after %s waiting for the client's streams: %d of %d arrived", spdyStreamWait, len(got), len(want))
		case <-ctx.Done():
			return nil, errors.New("the client went away before creating its streams")
		}
	}
	return got, nil
}

// readSizes reads the resize stream's JSON lines into resize until the
// stream ends. A line that is not a size is skipped; after one longer
// than maxResizeLine the rest is dropped (read, so that the connection's
// other streams do not wait for it).
func readSizes(st io.Reader, resize chan skiffrt.TerminalSize) {
	sc := bufio.NewScanner(st)
	sc.Buffer(make([]byte, 0, 256), maxResizeLine)
	for sc.Scan() {
		var size skiffrt.TerminalSize
		if json.Unmarshal(sc.Bytes(), &size) != nil {
			continue
		}
		pushSize(resize, size)
	}
	_, _ = io.Copy(io.Discard, st)
}

// writeExecStatus writes the command's status to the error stream in the
// form of protocol.
func writeExecStatus(st *spdystream.Stream, protocol string, status execStatus) error {
	var b []byte
	switch protocol {
	case protocolV5, protocolV4:
		b, _ = json.Marshal(status)
	default:
		if status.Status == "Success" {
			return nil
		}
		b = []byte(status.Message)
	}
	_, err := writeStream(st, b)
	return err
}
