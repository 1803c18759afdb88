package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// The Raft transport over mutual TLS (Config.TLS, Config.Peer): both ends
// show a certificate of the cluster's CA, Peer names the server behind it,
// and a connection is kept only between servers of the Raft configuration.
// Without it anyone who reaches the Raft port can append to the log.

// tlsHandshakeTimeout bounds an accepted connection's handshake and the
// membership check after it; each runs in its own goroutine, so a client
// that never finishes holds only itself.
const tlsHandshakeTimeout = 5 * time.Second

// Refused connections are logged at Warn up to refusedWarnBurst times per
// refusedWarnWindow, then at Debug, so that a flood cannot fill the log.
const (
	refusedWarnBurst  = 5
	refusedWarnWindow = time.Minute
)

// tlsAuth is the transport's TLS: the two configurations derived from
// Config.TLS and the mapping of a certificate to a server ID.
type tlsAuth struct {
	server *tls.Config // ClientAuth forced to RequireAndVerifyClientCert
	client *tls.Config // verifies the server's chain against RootCAs itself when ServerName is empty
	peer   func(tls.ConnectionState) (string, error)
}

// newTLSAuth checks Config.TLS and Config.Peer; both nil is plain TCP (a
// nil *tlsAuth).
func newTLSAuth(c *tls.Config, peer func(tls.ConnectionState) (string, error)) (*tlsAuth, error) {
	switch {
	case c == nil && peer == nil:
		return nil, nil
	case c == nil || peer == nil:
		return nil, errors.New("raft transport: Config.TLS and Config.Peer are set together or not at all")
	case c.ClientCAs == nil:
		return nil, errors.New("raft transport: the TLS config has no ClientCAs (the cluster CA that signs servers' certificates)")
	case c.RootCAs == nil:
		return nil, errors.New("raft transport: the TLS config has no RootCAs (the cluster CA that signs servers' certificates)")
	case len(c.Certificates) == 0 && (c.GetCertificate == nil || c.GetClientCertificate == nil):
		return nil, errors.New("raft transport: the TLS config has no certificate for this server (Certificates, or GetCertificate and GetClientCertificate)")
	}
	a := &tlsAuth{server: c.Clone(), client: c.Clone(), peer: peer}
	a.server.ClientAuth = tls.RequireAndVerifyClientCert
	if a.client.ServerName == "" {
		// Servers are dialed by IP address and named by Peer, not by a
		// host name: the chain is checked here, the name by Peer and the
		// configuration.
		a.client.InsecureSkipVerify = true
		next := a.client.VerifyConnection
		a.client.VerifyConnection = func(cs tls.ConnectionState) error {
			if _, err := a.verifyServer(cs); err != nil {
				return err
			}
			if next != nil {
				return next(cs)
			}
			return nil
		}
	}
	return a, nil
}

// verifyServer verifies a server's certificate chain against RootCAs, for
// client use.
func (a *tlsAuth) verifyServer(cs tls.ConnectionState) ([][]*x509.Certificate, error) {
	if len(cs.PeerCertificates) == 0 {
		return nil, errors.New("the server showed no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	chains, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots:         a.client.RootCAs,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("verify the server's certificate: %w", err)
	}
	return chains, nil
}

// peerID returns the server ID Peer gives the verified peer of c.
func (a *tlsAuth) peerID(c *tls.Conn, client bool) (string, error) {
	cs := c.ConnectionState()
	if client && len(cs.VerifiedChains) == 0 {
		chains, err := a.verifyServer(cs) // checked in the handshake; this fills in the chains for Peer
		if err != nil {
			return "", err
		}
		cs.VerifiedChains = chains
	}
	id, err := a.peer(cs)
	if err == nil && id == "" {
		err = errors.New("Peer gave an empty server ID")
	}
	if err != nil {
		return "", fmt.Errorf("identify the peer: %w", err)
	}
	return id, nil
}

// dialTLS completes the client handshake on c, the TCP connection to
// address, by deadline, and checks that the server answering is the one
// the Raft configuration puts at address (when it names one). It closes c
// on error.
func (l *streamLayer) dialTLS(c net.Conn, address string, deadline time.Time) (net.Conn, error) {
	tc := tls.Client(c, l.auth.client)
	id, err := func() (string, error) {
		if err := tc.SetDeadline(deadline); err != nil {
			return "", err
		}
		if err := tc.Handshake(); err != nil {
			return "", fmt.Errorf("tls handshake: %w", err)
		}
		id, err := l.auth.peerID(tc, true)
		if err != nil {
			return "", err
		}
		for _, srv := range l.servers() {
			if string(srv.Address) == address && string(srv.ID) != id {
				return id, fmt.Errorf("the Raft configuration has server %s at this address, the certificate is %s's", srv.ID, id)
			}
		}
		return id, tc.SetDeadline(time.Time{})
	}()
	if err != nil {
		tc.Close()
		if id != "" {
			return nil, fmt.Errorf("dial raft server %s (%s): %w", address, id, err)
		}
		return nil, fmt.Errorf("dial raft server %s: %w", address, err)
	}
	return tc, nil
}

// acceptResult is a connection acceptLoop hands to Accept, or the error
// that stopped it.
type acceptResult struct {
	c   net.Conn
	err error
}

// acceptTLS returns the next connection whose handshake and membership
// check passed.
func (l *streamLayer) acceptTLS() (net.Conn, error) {
	select {
	case r := <-l.accepted:
		return r.c, r.err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// acceptLoop accepts TCP connections and checks each in its own goroutine
// (handshake), until the listener is closed. Other errors (out of file
// descriptors under a flood) are waited out, as net/http does: the loop
// must outlive them.
func (l *streamLayer) acceptLoop() {
	defer l.bg.Done()
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if errors.Is(err, net.ErrClosed) {
			select {
			case l.accepted <- acceptResult{err: err}:
			case <-l.done:
			}
			return
		}
		if err != nil {
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.log.Warn("store: raft transport: accept failed; trying again", "err", err, "in", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
				continue
			case <-l.done:
				t.Stop()
				return
			}
		}
		delay = 0
		if l.fault() != nil {
			c.Close()
			continue
		}
		tc, err := l.track(c)
		if err != nil {
			return // closed
		}
		l.bg.Add(1)
		go l.handshake(tc)
	}
}

// handshake completes the server handshake on c within
// tlsHandshakeTimeout and hands it to Accept if its peer is a server of
// the Raft configuration, or any server while this one's configuration is
// empty (a new server must accept the leader that adds it). A refused
// connection is closed and logged.
func (l *streamLayer) handshake(c net.Conn) {
	defer l.bg.Done()
	deadline := time.Now().Add(tlsHandshakeTimeout)
	tc := tls.Server(c, l.auth.server)
	id, err := func() (string, error) {
		if err := tc.SetDeadline(deadline); err != nil {
			return "", err
		}
		if err := tc.Handshake(); err != nil {
			return "", fmt.Errorf("tls handshake: %w", err)
		}
		id, err := l.auth.peerID(tc, false)
		if err != nil {
			return "", err
		}
		servers, err := l.waitServers(deadline)
		if err != nil {
			return id, err
		}
		if len(servers) > 0 && !hasServer(servers, id) {
			return id, errors.New("not a server of the Raft configuration")
		}
		return id, tc.SetDeadline(time.Time{})
	}()
	if err != nil {
		tc.Close()
		l.refused(c.RemoteAddr(), id, err)
		return
	}
	select {
	case l.accepted <- acceptResult{c: tc}:
	case <-l.done:
		tc.Close()
	}
}

func hasServer(servers []raft.Server, id string) bool {
	for _, srv := range servers {
		if string(srv.ID) == id {
			return true
		}
	}
	return false
}

// setRaft gives the layer the Raft whose configuration says who may
// connect. Accepted connections wait for it.
func (l *streamLayer) setRaft(r *raft.Raft) {
	l.raft.Store(r)
	close(l.raftSet)
}

// servers is the latest Raft configuration's servers (raft keeps it in an
// atomic value, updated at every change: reading it does not go through
// raft's main loop); none before setRaft.
func (l *streamLayer) servers() []raft.Server {
	r := l.raft.Load()
	if r == nil {
		return nil
	}
	return r.GetConfiguration().Configuration().Servers
}

// waitServers is servers once Raft runs, waiting for it until deadline.
func (l *streamLayer) waitServers(deadline time.Time) ([]raft.Server, error) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-l.raftSet:
		return l.servers(), nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-t.C:
		return nil, errors.New("raft did not start in time")
	}
}

// refused logs a refused connection: at Warn the first refusedWarnBurst
// times in a refusedWarnWindow, then at Debug; the next Warn says how many
// went to Debug.
func (l *streamLayer) refused(remote net.Addr, id string, err error) {
	now := time.Now()
	l.refusals.mu.Lock()
	if now.Sub(l.refusals.start) >= refusedWarnWindow {
		l.refusals.start, l.refusals.warned = now, 0
	}
	lvl, quiet := slog.LevelDebug, 0
	if l.refusals.warned < refusedWarnBurst {
		l.refusals.warned++
		lvl, quiet = slog.LevelWarn, l.refusals.quiet
		l.refusals.quiet = 0
	} else {
		l.refusals.quiet++
	}
	l.refusals.mu.Unlock()
	args := []any{"remote", remote.String(), "err", err}
	if id != "" {
		args = append(args, "peer", id)
	}
	if quiet > 0 {
		args = append(args, "refused_at_debug_since_last", quiet)
	}
	l.log.Log(context.Background(), lvl, "store: refused a Raft connection", args...)
}

// refusalLog is the state of refused's rate limit.
type refusalLog struct {
	mu     sync.Mutex
	start  time.Time // of the current window
	warned int       // logged at Warn in it
	quiet  int       // logged at Debug since the last Warn
}
