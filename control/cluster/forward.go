package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"time"

	"connectrpc.com/connect"

	"skiff.dev/skiff/control/store"
)

// Headers of the API that forwarding reads or sets.
const (
	// ConsistencyHeader with the value "stale" asks a Get or List to be
	// answered from the state of the server it reaches, which may lag the
	// leader, without a round trip to the leader.
	ConsistencyHeader = "Skiff-Consistency"
	// forwardedHeader names the server that forwarded a request, so that a
	// request is forwarded once at most.
	forwardedHeader = "Skiff-Forwarded-By"
)

// ForwardConfig is what Forward needs.
type ForwardConfig struct {
	Store  *store.Store
	Pool   *Pool
	Logger *slog.Logger
	// Dial dials the leader's API; for tests (a cut-off server). nil: TCP.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLS is the client config this server reaches the leader with (its
	// own certificate, servers only); nil: plain HTTP, for tests.
	TLS *tls.Config
	// PeerHeader and Peer carry to the leader who a caller that
	// authenticated with its certificate is: the forwarded request gets
	// the header PeerHeader with Peer(request) as its value, or none when
	// Peer returns "" (a bearer token travels in the request as it is).
	// The header a caller sent itself is always dropped.
	PeerHeader string
	Peer       func(r *http.Request) string
}

// leaderWait bounds how long a request waits for a leader to be elected
// before it is refused: about ten election timeouts.
const leaderWait = 3 * time.Second

// Forward wraps the API's handler so that any server answers any call:
//   - writes (Create, Update, Delete, Bind, UpdateStatus, ...) go to the
//     leader: a follower forwards them, once;
//   - Get and List are linearizable: the leader answers them after it has
//     confirmed its leadership with a majority (store.LinearizableRead), a
//     follower forwards them; with "Skiff-Consistency: stale" the server
//     reached answers from its own state;
//   - Watch, Logs, Members and anything not a call are served where they
//     arrive: a watch resumes from a revision on any server.
//
// A call that cannot reach the leader is Unavailable: "no leader" while
// none is elected (after waiting up to 3 s for one), "outcome unknown"
// for a write whose connection to the leader broke after it was sent.
func Forward(next http.Handler, cfg ForwardConfig) *Forwarder {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dial := cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: 2 * time.Second}).DialContext
	}
	p := new(http.Protocols)
	scheme := "http"
	if cfg.TLS != nil {
		p.SetHTTP2(true)
		scheme = "https"
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	tr := &http.Transport{
		DialContext: dial, Protocols: p, TLSClientConfig: cfg.TLS,
		MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
	}
	return &Forwarder{next: next, st: cfg.Store, pool: cfg.Pool, log: log, tr: tr, errw: connect.NewErrorWriter(),
		scheme: scheme, peerHeader: cfg.PeerHeader, peer: cfg.Peer}
}

// Forwarder is the handler Forward returns; Close it when done.
type Forwarder struct {
	next http.Handler
	st   *store.Store
	pool *Pool
	log  *slog.Logger
	tr   *http.Transport
	errw *connect.ErrorWriter

	scheme     string
	peerHeader string
	peer       func(r *http.Request) string
}

// callKind says where a call is answered.
type callKind int

const (
	local callKind = iota // where it arrives
	read                  // by the leader, unless stale is asked
	write                 // by the leader
)

// kindOf classifies a request by its procedure, /package.Service/Method.
func kindOf(r *http.Request) callKind {
	path := strings.TrimPrefix(r.URL.Path, "/")
	service, method, ok := strings.Cut(path, "/")
	if !ok || !strings.HasPrefix(service, "skiff.") || strings.Contains(method, "/") {
		return local
	}
	switch method {
	case "Watch", "Logs", "StreamLogs", "ContainerLogs", "StreamContainerLogs", "Members":
		return local
	case "Get", "List", "Snapshot":
		if strings.EqualFold(r.Header.Get(ConsistencyHeader), "stale") {
			return local
		}
		return read
	}
	return write
}

func (f *Forwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind := kindOf(r)
	if kind == local {
		f.next.ServeHTTP(w, r)
		return
	}
	if f.st.IsLeader() {
		f.serveAsLeader(w, r, kind)
		return
	}
	if by := r.Header.Get(forwardedHeader); by != "" {
		f.fail(w, r, fmt.Errorf("not the leader: %s forwarded this call here, but leadership has moved; try again", by))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), leaderWait)
	id, _, err := f.st.WaitLeader(ctx)
	cancel()
	if err != nil {
		f.fail(w, r, fmt.Errorf("no leader elected yet (%w); try again", err))
		return
	}
	if id == f.st.ServerID() { // elected meanwhile
		f.serveAsLeader(w, r, kind)
		return
	}
	api := ""
	for _, m := range f.pool.Servers() {
		if m.Name == id {
			api = m.API
		}
	}
	if api == "" {
		f.fail(w, r, fmt.Errorf("the leader %s is not a live member of the gossip pool, so its API address is unknown; try again", id))
		return
	}
	self := f.st.ServerID()
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = f.scheme, api
			pr.Out.Host = api
			pr.Out.Header.Set(forwardedHeader, self)
			if f.peerHeader != "" {
				pr.Out.Header.Del(f.peerHeader)
				if v := f.peer(pr.In); v != "" {
					pr.Out.Header.Set(f.peerHeader, v)
				}
			}
		},
		Transport:     cancelOnClose{f.tr},
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var op *net.OpError
			switch {
			case errors.As(err, &op) && op.Op == "dial":
				f.fail(w, r, fmt.Errorf("the leader %s at %s is unreachable (%w): the call was not sent; try again", id, api, err))
			case kind == write:
				f.fail(w, r, fmt.Errorf("%w: the call was forwarded to the leader %s at %s and its answer was lost (%w); read the object to see what happened", store.ErrOutcomeUnknown, id, api, err))
			default:
				f.fail(w, r, fmt.Errorf("the leader %s at %s did not answer (%w); try again", id, api, err))
			}
		},
	}
	rp.ServeHTTP(w, r)
}

// serveAsLeader answers a call on the leader: a linearizable read once a
// majority confirms the leadership; a write as it is (the store refuses it
// if leadership was lost meanwhile).
func (f *Forwarder) serveAsLeader(w http.ResponseWriter, r *http.Request, kind callKind) {
	if kind == read {
		ctx, cancel := context.WithTimeout(r.Context(), leaderWait)
		err := f.st.LinearizableRead(ctx)
		cancel()
		if err != nil {
			f.fail(w, r, fmt.Errorf("this server could not confirm with a majority that it leads, so it cannot answer a linearizable read (%w); try again, or ask for a stale read with the header %s: stale", err, ConsistencyHeader))
			return
		}
	}
	f.next.ServeHTTP(w, r)
}

// fail answers the call Unavailable with err, in the call's protocol.
func (f *Forwarder) fail(w http.ResponseWriter, r *http.Request, err error) {
	f.log.Debug("cluster: call not answered", "path", r.URL.Path, "err", err)
	if werr := f.errw.Write(w, r, connect.NewError(connect.CodeUnavailable, err)); werr != nil {
		f.log.Debug("cluster: write an error", "err", werr)
	}
}

// Close releases the forwarder's idle connections to the leader.
func (f *Forwarder) Close() { f.tr.CloseIdleConnections() }

// cancelOnClose gives each forwarded request a context of its own, which
// closing the response body cancels. Over HTTP/2, a leader that answers
// before reading the request body (a refusal, "not the leader") leaves the
// transport's body writer waiting for client bytes that may never come, and
// the proxy's Close of the response body waits for that writer
// (as golang/go#80085 describes): the call would hang until the read
// timeout. Cancelling resets the stream instead.
type cancelOnClose struct{ next http.RoundTripper }

func (c cancelOnClose) RoundTrip(r *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(r.Context())
	res, err := c.next.RoundTrip(r.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	res.Body = &cancelBody{ReadCloser: res.Body, cancel: cancel}
	return res, nil
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	b.cancel()
	return b.ReadCloser.Close()
}
