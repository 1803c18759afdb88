package store

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is the Raft transport's network: TCP on a listener the
// caller may have opened (so that its address is known before the store
// opens), over mutual TLS between servers of the Raft configuration when
// Config.TLS is set (transport_tls.go), and, for tests, a fault switch that
// cuts this server off. Close closes every connection it made or accepted
// too: raft's transport leaves them open, and the peers' goroutines reading
// them would outlive it.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	cut       func() error // Config.NetworkHookForTesting; nil in production
	log       *slog.Logger

	// With TLS: acceptLoop and a handshake goroutine per connection (bg)
	// hand checked connections to Accept through accepted.
	auth     *tlsAuth // nil = plain TCP
	accepted chan acceptResult
	raft     atomic.Pointer[raft.Raft] // whose configuration says who may connect
	raftSet  chan struct{}             // closed by setRaft
	refusals refusalLog
	bg       sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	done   chan struct{} // closed by Close
}

var _ raft.StreamLayer = (*streamLayer)(nil)

// newStreamLayer returns the layer on ln; auth nil is plain TCP. With TLS
// it starts accepting at once; Close stops it.
func newStreamLayer(ln net.Listener, advertise net.Addr, auth *tlsAuth, cut func() error, log *slog.Logger) *streamLayer {
	l := &streamLayer{Listener: ln, advertise: advertise, auth: auth, cut: cut, log: log, done: make(chan struct{})}
	if auth != nil {
		l.accepted = make(chan acceptResult)
		l.raftSet = make(chan struct{})
		l.bg.Add(1)
		go l.acceptLoop()
	}
	return l
}

// Dial dials a peer's Raft address; with TLS, it returns once the
// handshake is done and the peer checked, all within timeout.
func (l *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if err := l.fault(); err != nil {
		return nil, err
	}
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	c, err := (&net.Dialer{Deadline: deadline}).Dial("tcp", string(address))
	if err != nil {
		return nil, err
	}
	tc, err := l.track(c)
	if err != nil || l.auth == nil {
		return tc, err
	}
	return l.dialTLS(tc, string(address), deadline)
}

// Accept waits for a peer's connection. A connection that arrives while
// the switch is cut is closed at once. With TLS, it returns only
// connections whose handshake and peer passed (see handshake).
func (l *streamLayer) Accept() (net.Conn, error) {
	if l.auth != nil {
		return l.acceptTLS()
	}
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.fault() != nil {
			c.Close()
			continue
		}
		return l.track(c)
	}
}

// Close stops accepting and closes every connection; with TLS it returns
// once the accept loop and every handshake have stopped.
func (l *streamLayer) Close() error {
	l.mu.Lock()
	if !l.closed {
		close(l.done)
	}
	l.closed = true
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	err := l.Listener.Close()
	l.bg.Wait()
	return err
}

// track registers c, to be closed with the layer.
func (l *streamLayer) track(c net.Conn) (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	if l.conns == nil {
		l.conns = map[net.Conn]struct{}{}
	}
	tc := &trackedConn{Conn: l.wrap(c), l: l}
	l.conns[tc] = struct{}{}
	return tc, nil
}

// trackedConn leaves its layer's set when closed.
type trackedConn struct {
	net.Conn
	l    *streamLayer
	once sync.Once
}

// Read reads; once the layer is closed, a read cut short by that is the
// end of the stream (io.EOF), which raft's transport takes quietly.
func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && errors.Is(err, net.ErrClosed) {
		c.l.mu.Lock()
		closed := c.l.closed
		c.l.mu.Unlock()
		if closed {
			return n, io.EOF
		}
	}
	return n, err
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// Addr is the address peers dial.
func (l *streamLayer) Addr() net.Addr { return l.advertise }

func (l *streamLayer) fault() error {
	if l.cut == nil {
		return nil
	}
	return l.cut()
}

func (l *streamLayer) wrap(c net.Conn) net.Conn {
	if l.cut == nil {
		return c
	}
	return &faultConn{Conn: c, cut: l.cut}
}

// faultConn fails reads and writes while the switch is cut, as a network
// partition would fail connections already open.
type faultConn struct {
	net.Conn
	cut func() error
}

func (c *faultConn) Read(b []byte) (int, error) {
	if err := c.cut(); err != nil {
		c.Conn.Close()
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *faultConn) Write(b []byte) (int, error) {
	if err := c.cut(); err != nil {
		c.Conn.Close()
		return 0, err
	}
	return c.Conn.Write(b)
}

// AdvertiseAddr settles the Raft address peers dial: adv when given, else
// the listener's, which must then not be a wildcard.
func AdvertiseAddr(ln net.Listener, adv string) (net.Addr, error) {
	if adv != "" {
		a, err := net.ResolveTCPAddr("tcp", adv)
		if err != nil {
			return nil, err
		}
		if a.IP == nil || a.IP.IsUnspecified() {
			return nil, errors.New("advertise address " + adv + " is not an address peers can dial")
		}
		return a, nil
	}
	a, ok := ln.Addr().(*net.TCPAddr)
	if !ok || a.IP.IsUnspecified() {
		return nil, errors.New("raft listens on " + ln.Addr().String() + ", which peers cannot dial: give an advertise address")
	}
	return a, nil
}
