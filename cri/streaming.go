package cri

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/netns"
)

// The streaming server is the HTTP server whose URLs Exec, Attach and
// PortForward return, as the kubelet's CRI streaming server: a client (the agent,
// crictl --transport websocket) opens the URL as a WebSocket within
// tokenTTL, once, and speaks Kubernetes' channel protocol on it
// (streaming_exec.go, streaming_attach.go, streaming_portforward.go); a client that asks for
// SPDY/3.1 instead (crictl's default transport, critest) gets the
// kubelet's SPDY protocols (streaming_spdy*.go). It listens on 127.0.0.1:
// only processes of the node reach it, and the token in the path is the
// only credential.

// DefaultStreamingAddress is where the streaming server listens when
// Config.StreamingAddress is empty: the loopback, on a port of the
// kernel's choosing.
const DefaultStreamingAddress = "127.0.0.1:0"

// Bounds of the streaming server.
const (
	// tokenTTL is how long a URL Exec or PortForward returned may be
	// opened (the kubelet's streaming server: 1 minute).
	tokenTTL = time.Minute
	// maxPendingTokens bounds the URLs handed out and not yet opened: a
	// client that asks for URLs and never opens them cannot fill memory.
	maxPendingTokens = 1024
	// maxStreams bounds the sessions served at once.
	maxStreams = 128
	// streamIdleTimeout ends a session in which nothing moved for that
	// long either way (the kubelet's default is 4 hours).
	streamIdleTimeout = time.Hour
	// streamWriteTimeout bounds one message's write to a client.
	streamWriteTimeout = 30 * time.Second
	// maxStreamMessage bounds a message a client sends.
	maxStreamMessage = 1 << 20
)

// Subprotocols of Kubernetes' channel protocol that the server speaks.
const (
	protocolV5 = "v5.channel.k8s.io"
	protocolV4 = "v4.channel.k8s.io"
)

// streamKind says what a token opens.
type streamKind string

const (
	streamExec        streamKind = "exec"
	streamAttach      streamKind = "attach"
	streamPortForward streamKind = "portforward"
)

// pendingStream is what a token opens, until it expires.
type pendingStream struct {
	kind    streamKind
	exec    *runtime.ExecRequest
	attach  *runtime.AttachRequest
	sandbox string // port-forward: the sandbox's ID
	expires time.Time
}

// podDialer dials address from inside the network namespace at
// netnsPath (the node's when empty).
type podDialer func(ctx context.Context, netnsPath, network, address string) (net.Conn, error)

// streamServer serves the URLs of Exec and PortForward. It is safe for
// concurrent use.
type streamServer struct {
	svc  *service
	log  *slog.Logger
	now  func() time.Time
	base string // "http://127.0.0.1:<port>"
	dial podDialer
	ln   net.Listener
	http *http.Server

	mu     sync.Mutex
	tokens map[string]pendingStream
	seats  chan struct{} // one per session served

	ctx    context.Context // ends every session when the server closes
	cancel func()
	wg     sync.WaitGroup // sessions
}

// newStreamServer listens on addr (DefaultStreamingAddress when empty) for
// svc's streaming sessions. The caller serves it (serve) and closes it.
func newStreamServer(svc *service, addr string, logger *slog.Logger) (*streamServer, error) {
	if addr == "" {
		addr = DefaultStreamingAddress
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("streaming address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("streaming address %q: the host must be a loopback IP address: the URLs carry no credential but their token", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for streaming on %s: %w", addr, err)
	}
	s := &streamServer{
		svc:    svc,
		log:    logger,
		now:    time.Now,
		base:   "http://" + ln.Addr().String(),
		dial:   dialInNamespace,
		ln:     ln,
		tokens: map[string]pendingStream{},
		seats:  make(chan struct{}, maxStreams),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	mux := http.NewServeMux()
	mux.HandleFunc("/exec/{token}", byTransport(s.serveExec, s.serveExecSPDY))
	mux.HandleFunc("/attach/{token}", byTransport(s.serveAttach, s.serveAttachSPDY))
	mux.HandleFunc("/portforward/{token}", byTransport(s.servePortForward, s.servePortForwardSPDY))
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		// Lifted once a session is upgraded (openSession): a session's
		// own idle timeout bounds it.
		ReadTimeout:    30 * time.Second,
		WriteTimeout:   30 * time.Second,
		IdleTimeout:    time.Minute,
		MaxHeaderBytes: 16 << 10,
		ErrorLog:       log.New(io.Discard, "", 0),
	}
	return s, nil
}

// serve serves until close.
func (s *streamServer) serve() error {
	if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve streaming: %w", err)
	}
	return nil
}

// close stops the server and ends the sessions in progress.
func (s *streamServer) close() {
	_ = s.http.Close() // not the hijacked connections: cancel ends them
	s.cancel()
	s.mu.Lock()
	clear(s.tokens)
	s.mu.Unlock()
	s.wg.Wait()
}

// url returns a new single-use URL for p under path ("exec" or
// "portforward").
func (s *streamServer) url(p pendingStream) (string, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	token := base64.RawURLEncoding.EncodeToString(b[:])
	now := s.now()
	p.expires = now.Add(tokenTTL)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tokens) >= maxPendingTokens {
		for t, q := range s.tokens {
			if !now.Before(q.expires) {
				delete(s.tokens, t)
			}
		}
		if len(s.tokens) >= maxPendingTokens {
			return "", fmt.Errorf("%w: %d streaming URLs are pending (not yet opened, and unexpired); open or let expire some first", errUnavailable, len(s.tokens))
		}
	}
	s.tokens[token] = p
	return s.base + "/" + string(p.kind) + "/" + token, nil
}

// take returns what token opens, once: a token is gone once taken or
// expired.
func (s *streamServer) take(kind streamKind, token string) (pendingStream, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.tokens[token]
	if !ok || p.kind != kind {
		return pendingStream{}, false
	}
	delete(s.tokens, token)
	return p, s.now().Before(p.expires)
}

// errNoStreaming is the error of Exec and PortForward on a service
// without a streaming server (tests of other things).
var errNoStreaming = fmt.Errorf("%w: this CRI server has no streaming server", errUnavailable)

// admit takes a token from the request's path and a seat for its
// session, and lifts the server's deadlines from the connection: the
// session's idle timeout replaces them. It answers the request itself when
// it fails (ok false). The caller calls done when the session ends.
func (s *streamServer) admit(w http.ResponseWriter, r *http.Request, kind streamKind) (p pendingStream, done func(), ok bool) {
	p, ok = s.take(kind, r.PathValue("token"))
	if !ok {
		http.Error(w, "unknown or expired token: a streaming URL may be opened once, within "+tokenTTL.String()+" of the call that returned it", http.StatusNotFound)
		return p, nil, false
	}
	select {
	case s.seats <- struct{}{}:
	default:
		http.Error(w, fmt.Sprintf("too many streaming sessions (%d); try again later", maxStreams), http.StatusServiceUnavailable)
		return p, nil, false
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	s.wg.Add(1)
	return p, func() { <-s.seats; s.wg.Done() }, true
}

// openSession admits the request and upgrades it to a WebSocket speaking
// one of protocols. It answers the request itself when it fails (ok
// false). The caller calls done when the session ends.
func (s *streamServer) openSession(w http.ResponseWriter, r *http.Request, kind streamKind, protocols []string) (p pendingStream, c *websocket.Conn, done func(), ok bool) {
	p, done, ok = s.admit(w, r, kind)
	if !ok {
		return p, nil, nil, false
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: protocols})
	if err != nil {
		done()
		s.log.Debug("streaming: upgrade failed", "kind", kind, "err", err)
		return p, nil, nil, false
	}
	c.SetReadLimit(maxStreamMessage)
	return p, c, done, true
}

// idleTimer cancels a session when nothing moved for streamIdleTimeout.
type idleTimer struct{ t *time.Timer }

func newIdleTimer(cancel func()) idleTimer {
	return idleTimer{time.AfterFunc(streamIdleTimeout, cancel)}
}

func (i idleTimer) touch() { i.t.Reset(streamIdleTimeout) }
func (i idleTimer) stop()  { i.t.Stop() }

// send writes one message of channel ch, bounded by streamWriteTimeout.
func send(ctx context.Context, c *websocket.Conn, ch byte, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, streamWriteTimeout)
	defer cancel()
	msg := make([]byte, 1+len(data))
	msg[0] = ch
	copy(msg[1:], data)
	return c.Write(ctx, websocket.MessageBinary, msg)
}

// dialInNamespace dials from inside a pod's network namespace: the socket
// is made on a thread in the namespace and keeps it wherever it is used
// from. Addresses are IP literals, so nothing is resolved.
func dialInNamespace(ctx context.Context, netnsPath, network, address string) (net.Conn, error) {
	var d net.Dialer
	if netnsPath == "" {
		return d.DialContext(ctx, network, address)
	}
	var conn net.Conn
	err := netns.Do(netnsPath, func() error {
		c, err := d.DialContext(ctx, network, address)
		conn = c
		return err
	})
	return conn, err
}
