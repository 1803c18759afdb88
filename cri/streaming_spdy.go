package cri

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/moby/spdystream"
)

// The SPDY/3.1 transport of the streaming server, beside WebSocket, for
// the kubelet-side clients (crictl's default transport, critest): the
// client opens the URL with GET or POST, "Connection: Upgrade", "Upgrade:
// SPDY/3.1" and the protocols it speaks in X-Stream-Protocol-Version
// headers, most preferred first; the server answers 101 Switching
// Protocols naming the one it chose, and the client then creates SPDY
// streams whose "streamType" header names each one's role. The framing
// is github.com/moby/spdystream's; the roles are Kubernetes'
// (streaming_spdy_exec.go, streaming_spdy_portforward.go). The server
// answers the client's pings; a session in which no frame moved for
// streamIdleTimeout is cut.

// Headers and names of the SPDY upgrade.
const (
	spdyUpgrade             = "SPDY/3.1"
	headerProtocolVersion   = "X-Stream-Protocol-Version"
	headerAcceptedProtocols = "X-Accepted-Stream-Protocol-Versions"
	headerStreamType        = "streamType"
)

// Bounds of a SPDY session.
const (
	// spdyStreamWait bounds the wait for the streams a client must
	// create after the upgrade (the kubelet's streamCreationTimeout).
	spdyStreamWait = 30 * time.Second
	// spdyCloseWait bounds a session's close: streams still open then
	// are cut with the connection.
	spdyCloseWait = 5 * time.Second
)

// byTransport serves a streaming URL over SPDY when the request's Upgrade
// header asks for it, else over WebSocket (GET only).
func byTransport(websocket, spdy http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch {
		case headerHas(r.Header, "Upgrade", spdyUpgrade) && (r.Method == http.MethodGet || r.Method == http.MethodPost):
			spdy(w, r)
		case r.Method == http.MethodGet:
			websocket(w, r)
		default:
			w.Header().Set("Allow", "GET, POST")
			http.Error(w, fmt.Sprintf("method %s: open a streaming URL with GET and Upgrade: websocket, or with GET or POST and Upgrade: %s", r.Method, spdyUpgrade), http.StatusMethodNotAllowed)
		}
	}
}

// headerHas reports whether a value of header key contains token, case
// aside.
func headerHas(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		if strings.Contains(strings.ToLower(v), strings.ToLower(token)) {
			return true
		}
	}
	return false
}

// negotiate picks the first protocol of the client's
// X-Stream-Protocol-Version headers (each may list several,
// comma-separated) that the server speaks. It answers the request itself
// when there is none (ok false): before the token is taken, so the client
// may try again.
func negotiate(w http.ResponseWriter, r *http.Request, server []string) (protocol string, ok bool) {
	if !headerHas(r.Header, "Connection", "upgrade") {
		http.Error(w, "unable to upgrade: header Connection: want Upgrade", http.StatusBadRequest)
		return "", false
	}
	var client []string
	for _, v := range r.Header.Values(headerProtocolVersion) {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				client = append(client, p)
			}
		}
	}
	if len(client) == 0 {
		http.Error(w, "unable to upgrade: header "+headerProtocolVersion+": at least one protocol is required; the server speaks "+strings.Join(server, ", "), http.StatusBadRequest)
		return "", false
	}
	for _, c := range client {
		for _, s := range server {
			if c == s {
				return s, true
			}
		}
	}
	for _, s := range server {
		w.Header().Add(headerAcceptedProtocols, s)
	}
	http.Error(w, fmt.Sprintf("unable to upgrade: header %s: the client speaks %s, the server %s", headerProtocolVersion, strings.Join(client, ", "), strings.Join(server, ", ")), http.StatusForbidden)
	return "", false
}

// spdySession is one SPDY connection upgraded from a request. The client
// creates the streams; accept says which it may create, and the session
// resets the others. The accepted ones arrive, replied to, on arrived,
// and are the session's to close; close resets those still open.
type spdySession struct {
	log     *slog.Logger
	conn    *spdystream.Connection
	raw     net.Conn
	accept  func(*spdystream.Stream) error
	arrived chan *spdystream.Stream
	served  chan struct{} // closed when conn.Serve returns
	once    sync.Once

	mu      sync.Mutex
	streams map[*spdystream.Stream]struct{} // accepted and not forgotten
	closed  bool
}

// upgradeSPDY answers the request 101 Switching Protocols with protocol
// and serves SPDY on its connection. At most pending streams wait on
// arrived; more are reset. The caller closes the session.
func (s *streamServer) upgradeSPDY(w http.ResponseWriter, protocol string, pending int, accept func(*spdystream.Stream) error) (*spdySession, error) {
	raw, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "unable to upgrade: "+err.Error(), http.StatusInternalServerError)
		return nil, fmt.Errorf("hijack the connection: %w", err)
	}
	_ = raw.SetDeadline(time.Now().Add(streamWriteTimeout))
	res := "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + spdyUpgrade + "\r\n" + headerProtocolVersion + ": " + protocol + "\r\n\r\n"
	if _, err := io.WriteString(raw, res); err != nil {
		raw.Close()
		return nil, fmt.Errorf("answer the upgrade: %w", err)
	}
	_ = raw.SetDeadline(time.Time{})
	conn, err := spdystream.NewConnection(deadlineConn{Conn: raw, r: brw.Reader}, true)
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("start SPDY: %w", err)
	}
	conn.SetIdleTimeout(streamIdleTimeout)
	conn.SetCloseTimeout(spdyCloseWait)
	ss := &spdySession{
		log: s.log, conn: conn, raw: raw, accept: accept,
		arrived: make(chan *spdystream.Stream, pending),
		served:  make(chan struct{}),
		streams: map[*spdystream.Stream]struct{}{},
	}
	go func() {
		defer close(ss.served)
		conn.Serve(ss.newStream)
	}()
	return ss, nil
}

// newStream is called, one at a time per stream, for each stream the
// client creates: it accepts and replies to the stream, or resets it. It
// never blocks for long: the connection's frames wait for it.
func (ss *spdySession) newStream(st *spdystream.Stream) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		st.Reset()
		return
	}
	if err := ss.accept(st); err != nil {
		ss.log.Debug("streaming: SPDY stream refused", "stream", st.Identifier(), "err", err)
		st.Reset()
		return
	}
	// Replied to before it is handed over: a stream's writes wait for
	// its reply.
	if err := st.SendReply(http.Header{}, false); err != nil {
		ss.log.Debug("streaming: SPDY reply failed", "stream", st.Identifier(), "err", err)
		st.Reset()
		return
	}
	select {
	case ss.arrived <- st:
		ss.streams[st] = struct{}{}
	default:
		ss.log.Debug("streaming: SPDY stream refused: too many pending", "stream", st.Identifier())
		st.Reset()
	}
}

// done returns a channel closed when the client's side of the connection
// is gone (or its idle timeout passed).
func (ss *spdySession) done() <-chan bool { return ss.conn.CloseChan() }

// forget closes and resets streams the session has finished with.
func (ss *spdySession) forget(streams ...*spdystream.Stream) {
	ss.mu.Lock()
	for _, st := range streams {
		delete(ss.streams, st)
	}
	ss.mu.Unlock()
	for _, st := range streams {
		if st != nil {
			st.Close()
			st.Reset()
		}
	}
}

// close resets the streams still open, closes the connection and waits
// for its goroutines to end. It is idempotent.
func (ss *spdySession) close() {
	ss.once.Do(func() {
		ss.mu.Lock()
		ss.closed = true
		streams := ss.streams
		ss.streams = nil
		ss.mu.Unlock()
		for st := range streams {
			st.Reset() // its readers end; the connection need not wait for it
		}
		for {
			select {
			case st := <-ss.arrived: // accepted, never taken
				st.Reset()
				continue
			default:
			}
			break
		}
		_ = ss.conn.Close()
		if err := ss.conn.Wait(2 * spdyCloseWait); err != nil && !errors.Is(err, net.ErrClosed) {
			ss.log.Debug("streaming: SPDY close", "err", err)
		}
		ss.raw.Close()
		<-ss.served
	})
}

// writeStream writes p to a stream in frames of at most maxChunk.
func writeStream(st *spdystream.Stream, p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), maxChunk)]
		if err := st.WriteData(chunk, false); err != nil {
			return n, errors.Join(io.ErrClosedPipe, err)
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

// streamWriter writes what it is given to a stream.
type streamWriter struct{ st *spdystream.Stream }

func (w streamWriter) Write(p []byte) (int, error) { return writeStream(w.st, p) }

// deadlineConn is a hijacked connection whose reads start with what the
// HTTP server had buffered, and whose every write is bounded by
// streamWriteTimeout (spdystream sets no deadline of its own).
type deadlineConn struct {
	net.Conn
	r *bufio.Reader
}

func (c deadlineConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c deadlineConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	return c.Conn.Write(p)
}

// watchSPDY cancels a session's context when its client goes away; the
// goroutine ends with ctx.
func watchSPDY(ctx context.Context, cancel func(), ss *spdySession) {
	go func() {
		select {
		case <-ss.done():
			cancel()
		case <-ctx.Done():
		}
	}()
}
