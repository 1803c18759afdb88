package store

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// testCA is a cluster CA made for a test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// config is the TLS config of server id: a leaf whose CN is id, for both
// ends, and the CA for both.
func (ca *testCA) config(t *testing.T, id string) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: id},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		RootCAs:      ca.pool,
		ClientCAs:    ca.pool,
	}
}

// peerCN is Config.Peer as the tests' pki decides: the verified leaf's CN.
func peerCN(cs tls.ConnectionState) (string, error) {
	if len(cs.VerifiedChains) == 0 {
		return "", errors.New("no verified chain")
	}
	return cs.VerifiedChains[0][0].Subject.CommonName, nil
}

// withTLS sets the store's TLS from ca for server id.
func withTLS(t *testing.T, ca *testCA, id string) func(*Config) {
	return func(cfg *Config) {
		cfg.ServerID, cfg.TLS, cfg.Peer = id, ca.config(t, id), peerCN
	}
}

// openTLSCluster opens n stores over mTLS with certificates of ca and
// bootstraps them together.
func openTLSCluster(t *testing.T, ca *testCA, n int) []*Store {
	t.Helper()
	lns := make([]net.Listener, n)
	var servers []RaftServer
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i] = ln
		servers = append(servers, RaftServer{ID: NewServerID(), Address: ln.Addr().String()})
	}
	stores := make([]*Store, n)
	for i := range n {
		stores[i] = openTest(t, "", func(cfg *Config) {
			withTLS(t, ca, servers[i].ID)(cfg)
			cfg.Cluster, cfg.Listener = true, lns[i]
		})
	}
	for _, s := range stores {
		if err := s.Bootstrap(servers); err != nil {
			t.Fatal(err)
		}
	}
	return stores
}

// waitKey waits, on a watch, until s holds key.
func waitKey(t *testing.T, s *Store, key string) KV {
	t.Helper()
	ctx := testCtx(t)
	rev := s.Revision()
	if kv, err := s.Get(ctx, key); err == nil {
		return kv
	}
	ch, err := s.Watch(ctx, key, rev)
	if err != nil {
		t.Fatal(err)
	}
	for ev := range ch {
		if ev.KV.Key == key && ev.Type == EventPut {
			return ev.KV
		}
	}
	t.Fatalf("%s: watch for %s ended before it was stored", s.ServerID(), key)
	return KV{}
}

// TestTLSClusterReplicates: three servers over mutual TLS elect a leader
// and replicate its writes.
func TestTLSClusterReplicates(t *testing.T) {
	stores := openTLSCluster(t, newTestCA(t, "cluster"), 3)
	l := stores[leaderOf(t, stores)]
	kv := mustCreate(t, l, "/a", "1")
	for _, s := range stores {
		if got := waitKey(t, s, "/a"); !kvEqual(got, kv) {
			t.Errorf("%s holds %+v, the leader wrote %+v", s.ServerID(), got, kv)
		}
	}
}

// TestTLSConfigErrors: TLS and Peer go together, and TLS names the CA for
// both ends.
func TestTLSConfigErrors(t *testing.T) {
	ca := newTestCA(t, "cluster")
	tests := []struct {
		name string
		tune func(*Config)
		want string
	}{
		{"TLS without Peer", func(c *Config) { c.TLS = ca.config(t, "a") }, "set together"},
		{"Peer without TLS", func(c *Config) { c.Peer = peerCN }, "set together"},
		{"no ClientCAs", func(c *Config) { c.TLS.ClientCAs = nil }, "no ClientCAs"},
		{"no RootCAs", func(c *Config) { c.TLS.RootCAs = nil }, "no RootCAs"},
		{"no certificate", func(c *Config) { c.TLS.Certificates = nil }, "no certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Dir: t.TempDir()}
			if !strings.HasSuffix(tt.name, "without Peer") && !strings.HasSuffix(tt.name, "without TLS") {
				withTLS(t, ca, "a")(&cfg)
			}
			tt.tune(&cfg)
			s, err := Open(testCtx(t), cfg)
			if err == nil {
				s.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open: %v, want an error with %q", err, tt.want)
			}
		})
	}
}

// attacker is a raft NetworkTransport on loopback whose dial is dial.
type attacker struct {
	net.Listener
	dial func(address string, timeout time.Duration) (net.Conn, error)
}

func (a *attacker) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return a.dial(string(address), timeout)
}
func (a *attacker) Addr() net.Addr { return a.Listener.Addr() }

// forge sends s an AppendEntries from a leader of a later term that
// appends a create of key and commits it, through a transport that dials
// with dial.
func forge(t *testing.T, s *Store, key string, dial func(string, time.Duration) (net.Conn, error)) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	trans := raft.NewNetworkTransport(&attacker{Listener: ln, dial: dial}, 1, 5*time.Second, io.Discard)
	defer trans.Close()
	last := s.raft.LastIndex()
	var prev raft.Log
	if err := s.logs.GetLog(last, &prev); err != nil {
		t.Fatal(err)
	}
	term := prev.Term + 10
	req := &raft.AppendEntriesRequest{
		RPCHeader:    raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("forger"), Addr: []byte(ln.Addr().String())},
		Term:         term,
		PrevLogEntry: last,
		PrevLogTerm:  prev.Term,
		Entries: []*raft.Log{{
			Index: last + 1, Term: term, Type: raft.LogCommand,
			Data: command{op: opCreate, key: key, value: []byte("forged")}.marshal(),
		}},
		LeaderCommitIndex: last + 1,
	}
	var resp raft.AppendEntriesResponse
	if err := trans.AppendEntries(raft.ServerID(s.ServerID()), raft.ServerAddress(s.RaftAddr()), req, &resp); err != nil {
		return err
	}
	if !resp.Success {
		return fmt.Errorf("AppendEntries answered, not taken: %+v", resp)
	}
	return nil
}

func dialPlain(address string, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", address, timeout)
}

// dialWith dials with the certificate of c, trusting any server.
func dialWith(c *tls.Config) func(string, time.Duration) (net.Conn, error) {
	c = c.Clone()
	c.InsecureSkipVerify = true
	return func(address string, timeout time.Duration) (net.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", address, c)
	}
}

// TestTLSRefusesForgedAppendEntries: an AppendEntries carrying a create
// that no client asked for is taken by a server on plain TCP (the
// control case: the forgery is one Raft accepts), and refused by a server
// over mutual TLS when it comes on plain TCP, with a certificate of
// another CA (naming the server itself), or with a certificate of the
// cluster's CA for a server that is not in the configuration: the call
// fails, the key is not stored, the commit index and term are unchanged,
// and the refusal is logged with who and why.
func TestTLSRefusesForgedAppendEntries(t *testing.T) {
	ca, other := newTestCA(t, "cluster"), newTestCA(t, "other")
	const id = "server-target"
	tests := []struct {
		name    string
		tls     bool
		dial    func(string, time.Duration) (net.Conn, error)
		taken   bool
		logWant string // in the refusal's log line
	}{
		{"server on plain TCP (control)", false, dialPlain, true, ""},
		{"plain TCP client", true, dialPlain, false, "tls handshake"},
		{"certificate of another CA", true, dialWith(other.config(t, id)), false, "certificate"},
		{"cluster certificate of a non-member", true, dialWith(ca.config(t, "intruder")), false, "peer=intruder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := newLogRecorder()
			s := openTest(t, "", func(cfg *Config) {
				cfg.Logger = slog.New(logs)
				if tt.tls {
					withTLS(t, ca, id)(cfg)
				}
			})
			ctx := testCtx(t)
			mustCreate(t, s, "/before", "1")
			rev, commit, term := s.Revision(), s.raft.CommitIndex(), s.raft.Stats()["term"]

			err := forge(t, s, "/forged", tt.dial)
			if tt.taken {
				if err != nil {
					t.Fatalf("the forgery was refused by a server on plain TCP: %v", err)
				}
				if kv := waitKey(t, s, "/forged"); string(kv.Value) != "forged" {
					t.Fatalf("/forged = %q", kv.Value)
				}
				return
			}
			if err == nil {
				t.Fatal("the forged AppendEntries call succeeded")
			}
			if _, err := s.Get(ctx, "/forged"); !errors.Is(err, ErrNotFound) {
				t.Errorf("get /forged: %v, want ErrNotFound", err)
			}
			if s.Revision() != rev || s.raft.CommitIndex() != commit || s.raft.Stats()["term"] != term || !s.IsLeader() {
				t.Errorf("after the forgery: rv %d, commit %d, term %s, leader %v; before: rv %d, commit %d, term %s, leader",
					s.Revision(), s.raft.CommitIndex(), s.raft.Stats()["term"], s.IsLeader(), rev, commit, term)
			}
			line := logs.wait(t, "refused a Raft connection")
			if !strings.HasPrefix(line, "WARN") || !strings.Contains(line, "remote=127.0.0.1:") || !strings.Contains(line, tt.logWant) {
				t.Errorf("refusal logged as %q, want a WARN naming the remote and %q", line, tt.logWant)
			}
		})
	}
}

// TestTLSAcceptNotBlocked: connections that never start a handshake do
// not keep the leader from reaching a new server it adds (which, with an
// empty configuration, accepts the leader's certificate); a flood of
// failed handshakes is logged at Warn only a few times.
func TestTLSAcceptNotBlocked(t *testing.T) {
	ca := newTestCA(t, "cluster")
	leader := openTLSCluster(t, ca, 1)[0]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := newLogRecorder()
	id := NewServerID()
	joiner := openTest(t, "", func(cfg *Config) {
		withTLS(t, ca, id)(cfg)
		cfg.Cluster, cfg.Listener, cfg.NoWait, cfg.Logger = true, ln, true, slog.New(logs)
	})
	leaderOf(t, []*Store{leader})

	// Idle connections first in the joiner's accept queue: accepted one at
	// a time with a 5 s handshake deadline each, they would hold the
	// leader back far longer than the test's 10 s.
	const idle = 32
	for range idle {
		c, err := net.Dial("tcp", joiner.RaftAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	// And a flood of connections that fail their handshake at once.
	const garbage = 3 * refusedWarnBurst
	for range garbage {
		c, err := net.Dial("tcp", joiner.RaftAddr())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}

	// Raft commits the new configuration on the leader alone; the write
	// after it needs the new server, so the leader must have got through.
	ctx := testCtx(t)
	if err := leader.AddVoter(ctx, joiner.ServerID(), joiner.RaftAddr()); err != nil {
		t.Fatalf("add the new server: %v", err)
	}
	kv := mustCreate(t, leader, "/a", "1")
	if got := waitKey(t, joiner, "/a"); !kvEqual(got, kv) {
		t.Errorf("the new server holds %+v, the leader wrote %+v", got, kv)
	}

	for range garbage {
		logs.wait(t, "refused a Raft connection")
	}
	if n := logs.count("WARN", "refused a Raft connection"); n != refusedWarnBurst {
		t.Errorf("%d refusals logged at WARN, want %d (the rest at DEBUG)", n, refusedWarnBurst)
	}
}

// logRecorder is a slog handler that keeps every record as one line,
// "LEVEL msg k=v ...", and lets a test wait for lines.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
	next  int // lines handed out by wait
	added chan struct{}
	attrs []slog.Attr
	root  *logRecorder
}

func newLogRecorder() *logRecorder {
	r := &logRecorder{added: make(chan struct{}, 1)}
	r.root = r
	return r
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{root: r.root, attrs: append(append([]slog.Attr{}, r.attrs...), as...)}
}

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", rec.Level, rec.Message)
	add := func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true }
	for _, a := range r.attrs {
		add(a)
	}
	rec.Attrs(add)
	root := r.root
	root.mu.Lock()
	root.lines = append(root.lines, b.String())
	root.mu.Unlock()
	select {
	case root.added <- struct{}{}:
	default:
	}
	return nil
}

// wait returns the next line, after those it returned before, holding
// msg; it fails the test if none comes within the test's context.
func (r *logRecorder) wait(t *testing.T, msg string) string {
	t.Helper()
	ctx := testCtx(t)
	for {
		r.mu.Lock()
		for ; r.next < len(r.lines); r.next++ {
			if l := r.lines[r.next]; strings.Contains(l, msg) {
				r.next++
				r.mu.Unlock()
				return l
			}
		}
		r.mu.Unlock()
		select {
		case <-r.added:
		case <-ctx.Done():
			t.Fatalf("no log line with %q; got:\n%s", msg, strings.Join(r.lines, "\n"))
		}
	}
}

func (r *logRecorder) count(level, msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.lines {
		if strings.HasPrefix(l, level+" ") && strings.Contains(l, msg) {
			n++
		}
	}
	return n
}

// TestTLSDialChecksServer: a leader whose configuration puts a server
// "ghost" at another server's address does not replicate to it: the
// server answering there shows its own certificate, and the dial is
// refused, naming both.
func TestTLSDialChecksServer(t *testing.T) {
	ca := newTestCA(t, "cluster")
	logs := newLogRecorder()
	leader := openTest(t, "", func(cfg *Config) {
		withTLS(t, ca, NewServerID())(cfg)
		cfg.Logger = slog.New(logs)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	other := openTest(t, "", func(cfg *Config) {
		withTLS(t, ca, NewServerID())(cfg)
		cfg.Cluster, cfg.Listener, cfg.NoWait = true, ln, true
	})
	// Raft commits the change on the leader alone, then replicates.
	if err := leader.AddVoter(testCtx(t), "ghost", other.RaftAddr()); err != nil {
		t.Fatal(err)
	}
	line := logs.wait(t, "the certificate is "+other.ServerID()+"'s")
	if !strings.Contains(line, "server ghost") {
		t.Errorf("dial refused as %q, want it to name ghost", line)
	}
	if got := other.raft.LastIndex(); got != 0 {
		t.Errorf("the server at ghost's address took the leader's log up to %d", got)
	}
}
