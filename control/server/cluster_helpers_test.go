package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"skiff.dev/skiff/control/api/apitest"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/cluster"
	"skiff.dev/skiff/control/cluster/pki"
)

// The tests of this file run clusters of three servers in this process,
// each with its own data directory, gossip port and Raft listener, and
// check what a user of the API sees through each server: forwarding to the
// leader, a partition of the leader, a server whose disk fails, a data
// directory of another cluster, and a race between a pod's creation and
// its namespace's deletion.

// memberNames returns the names of the members every server of c lists,
// sorted; servers that disagree fail the test.
func (c testCluster) memberNames(t *testing.T, ctx context.Context) []string {
	t.Helper()
	var first []string
	for i, s := range c {
		res, err := s.clusterAPI().Members(ctx, connect.NewRequest(&skiffv1.MembersRequest{}))
		if err != nil {
			t.Fatalf("members through %s: %v", s.Addr(), err)
		}
		var names []string
		for _, m := range res.Msg.GetMembers() {
			names = append(names, m.GetName())
		}
		slices.Sort(names)
		if i == 0 {
			first = names
		} else if !slices.Equal(names, first) {
			t.Fatalf("members through %s: %v; through %s: %v", s.Addr(), names, c[0].Addr(), first)
		}
	}
	return first
}

// testServer is one server run by a test, with its test hooks.
type testServer struct {
	*Server
	dir    string
	gossip string
	// cut cuts the server off from the other servers while set
	// (Config.networkHook).
	cut atomic.Bool
	// failing fails every state.db write while set (Config.applyHook).
	failing atomic.Bool
	heldMu  sync.Mutex
	held    chan struct{} // while not nil, the state machine waits for it to close

	hc *http.Client // the admin's API client, once ready (waitReady)

	cancel context.CancelFunc
	done   chan struct{} // closed when Run returns, with its result in err
	err    error
	waited bool // the test took Run's result
}

// startServer starts a server on cfg, with the test's hooks, and stops it
// when the test ends. A Run that failed and whose result the test did not
// take (waitRun, stopAndWait) fails the test.
func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: s, dir: cfg.DataDir, gossip: cfg.Gossip, done: make(chan struct{})}
	s.cfg.failStopGrace = 50 * time.Millisecond
	s.cfg.networkHook = func() error {
		if ts.cut.Load() {
			return errors.New("injected: cut off from the other servers")
		}
		return nil
	}
	s.cfg.applyHook = func(uint64) error {
		if ts.failing.Load() {
			return errInjected
		}
		ts.heldMu.Lock()
		held := ts.held
		ts.heldMu.Unlock()
		if held != nil {
			<-held
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts.cancel = cancel
	go func() {
		defer close(ts.done)
		ts.err = s.Run(ctx)
	}()
	t.Cleanup(func() {
		ts.release()
		cancel()
		select {
		case <-ts.done:
		case <-time.After(30 * time.Second):
			t.Errorf("server in %s: Run did not return within 30s of being stopped", ts.dir)
			return
		}
		if ts.err != nil && !ts.waited {
			t.Errorf("server in %s: Run: %v", ts.dir, ts.err)
		}
	})
	return ts
}

// waitReady waits until the server's API answers and makes its client;
// Run failing first fails the test.
func (ts *testServer) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-ts.Ready():
		if ts.hc == nil {
			ts.hc = apiClient(t, ts.Server)
		}
	case <-ts.done:
		ts.waited = true
		t.Fatalf("server in %s: Run: %v", ts.dir, ts.err)
	case <-time.After(30 * time.Second):
		t.Fatalf("server in %s: not ready after 30s", ts.dir)
	}
}

// waitRun waits at most timeout for Run to return by itself, and returns
// its result.
func (ts *testServer) waitRun(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-ts.done:
		ts.waited = true
		return ts.err
	case <-time.After(timeout):
		t.Fatalf("server in %s: Run did not return within %s", ts.dir, timeout)
		return nil
	}
}

// stopAndWait stops the server and returns Run's result.
func (ts *testServer) stopAndWait(t *testing.T) error {
	t.Helper()
	ts.cancel()
	return ts.waitRun(t, 30*time.Second)
}

// holdApplies makes the server's state machine wait before its next entry
// until the returned function is called (once or more).
func (ts *testServer) holdApplies() (release func()) {
	ts.heldMu.Lock()
	defer ts.heldMu.Unlock()
	ts.held = make(chan struct{})
	return ts.release
}

func (ts *testServer) release() {
	ts.heldMu.Lock()
	defer ts.heldMu.Unlock()
	if ts.held != nil {
		close(ts.held)
		ts.held = nil
	}
}

// base is the API's HTTPS URL.
func (ts *testServer) base() string { return ts.Admin().Server }

// client is the bootstrap admin's client of the server's API; waitReady
// makes it.
func (ts *testServer) client() *http.Client {
	if ts.hc == nil {
		panic("server in " + ts.dir + ": no API client before waitReady")
	}
	return ts.hc
}

func (ts *testServer) namespaces() skiffv1connect.NamespaceServiceClient {
	return skiffv1connect.NewNamespaceServiceClient(ts.client(), ts.base())
}

func (ts *testServer) pods() skiffv1connect.PodServiceClient {
	return skiffv1connect.NewPodServiceClient(ts.client(), ts.base())
}

func (ts *testServer) clusterAPI() skiffv1connect.ClusterServiceClient {
	return skiffv1connect.NewClusterServiceClient(ts.client(), ts.base())
}

// apiClient is an HTTPS client of s's API (HTTP/1.1 or HTTP/2) that
// trusts the cluster CA and calls as the bootstrap admin, as the CLI does
// with the client config Admin returns. Its idle connections are closed
// when the test ends.
func apiClient(t testing.TB, s *Server) *http.Client {
	t.Helper()
	admin := s.Admin()
	if admin.Token == "" {
		t.Fatalf("server at %s: no bootstrap token in its admin config", admin.Server)
	}
	return &http.Client{Transport: bearer{token: admin.Token, next: apiTransport(t, s)}}
}

// apiTransport is an HTTPS transport (HTTP/1.1 or HTTP/2) to s's API that
// trusts the cluster CA and sends no credentials. Its idle connections are
// closed when the test ends.
func apiTransport(t testing.TB, s *Server) *http.Transport {
	t.Helper()
	admin := s.Admin()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(admin.CA) {
		t.Fatalf("server at %s: no CA certificate in its admin config: %q", admin.Server, admin.CA)
	}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, Protocols: p}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// bearer sends its token with every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context()) // a RoundTripper must not change its request
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// membersView asks ts for the cluster's members and says whether it sees
// exactly the servers want, one leading and the others voting; it returns
// the leader's API address, and what it saw, for a failure message.
func (ts *testServer) membersView(ctx context.Context, want []*testServer) (leaderAPI, view string, ok bool) {
	res, err := ts.clusterAPI().Members(ctx, connect.NewRequest(&skiffv1.MembersRequest{}))
	if err != nil {
		return "", fmt.Sprintf("members through %s: %v", ts.Addr(), err), false
	}
	var parts []string
	leaders, voters := 0, 0
	apis := map[string]bool{}
	for _, m := range res.Msg.GetMembers() {
		parts = append(parts, fmt.Sprintf("%s(%s %s api %s)", m.GetName(), m.GetRaftRole(), m.GetState(), m.GetApiAddress()))
		switch m.GetRaftRole() {
		case "leader":
			leaders++
			leaderAPI = m.GetApiAddress()
		case "voter":
			voters++
		}
		apis[m.GetApiAddress()] = true
	}
	view = fmt.Sprintf("through %s: %s", ts.Addr(), strings.Join(parts, ", "))
	if leaders != 1 || voters != len(want)-1 || len(res.Msg.GetMembers()) != len(want) {
		return "", view, false
	}
	for _, s := range want {
		if !apis[s.Addr()] {
			return "", view, false
		}
	}
	return leaderAPI, view, true
}

// testCluster is the servers of a test cluster.
type testCluster []*testServer

// token is the join token the servers of c share.
func (c testCluster) token() string { return c[0].JoinToken() }

// startCluster starts n servers that bootstrap a cluster together
// (BootstrapExpect n, each joining the others by gossip, all with one
// join token), and waits until each answers.
func startCluster(t *testing.T, n int) testCluster {
	t.Helper()
	token := pki.NewToken()
	gossip := make([]string, n)
	for i := range gossip {
		gossip[i] = freeAddr(t)
	}
	c := make(testCluster, n)
	for i := range c {
		var join []string
		for j, g := range gossip {
			if j != i {
				join = append(join, g)
			}
		}
		c[i] = startServer(t, Config{
			DataDir: t.TempDir(), Listen: "127.0.0.1:0", Gossip: gossip[i], Join: join,
			BootstrapExpect: n, RaftListen: "127.0.0.1:0", Token: token,
		})
	}
	for _, s := range c {
		s.waitReady(t)
	}
	return c
}

// waitLeader waits until Members through every server shows all of them,
// one leading and the others voting, the same leader for all, and returns
// the leader and the followers.
func (c testCluster) waitLeader(t *testing.T) (leader *testServer, followers []*testServer) {
	t.Helper()
	ctx := testCtx(t)
	var last string
	eventually(t, 30*time.Second, func() bool {
		api := ""
		for _, s := range c {
			l, view, ok := s.membersView(ctx, c)
			last = view
			if !ok || api != "" && l != api {
				return false
			}
			api = l
		}
		leader, followers = nil, nil
		for _, s := range c {
			if s.Addr() == api {
				leader = s
			} else {
				followers = append(followers, s)
			}
		}
		return leader != nil
	}, func() string { return "no leader all agree on: " + last })
	return leader, followers
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	// Below Linux's ephemeral range (32768 and up), where listeners on
	// port 0 pick theirs; free on TCP and UDP (gossip uses both).
	for range 100 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(20000+rand.IntN(12000)))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ln.Close()
		if pc, err := net.ListenPacket("udp", addr); err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no free port on 127.0.0.1 after 100 tries")
	return ""
}

// hashTree returns, for every file under dir, its size and SHA-256; dir
// without files fails the test.
func hashTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := files(t, dir)
	if len(out) == 0 {
		t.Fatalf("hash %s: no files", dir)
	}
	return out
}

// files returns, for every file under dir, its size and SHA-256, and for
// every directory under it, "dir".
func files(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			out[rel] = "dir"
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		n, err := io.Copy(h, f)
		if err != nil {
			return err
		}
		out[rel] = fmt.Sprintf("%d %s", n, hex.EncodeToString(h.Sum(nil)))
		return nil
	})
	if err != nil {
		t.Fatalf("hash %s: %v", dir, err)
	}
	return out
}

func namespace(name string) *skiffv1.Namespace {
	return &skiffv1.Namespace{Metadata: &skiffv1.ObjectMeta{Name: name}}
}

// stale asks for a read answered by the server reached, from its own state.
func stale(get *skiffv1.GetRequest) *connect.Request[skiffv1.GetRequest] {
	req := connect.NewRequest(get)
	req.Header().Set(cluster.ConsistencyHeader, "stale")
	return req
}

// testCtx bounds a test's calls.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eventually is the shared wait of the tests that speak the API.
var eventually = apitest.Eventually
