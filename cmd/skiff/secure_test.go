package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
	membership "skiff.dev/skiff/control/cluster"
	"skiff.dev/skiff/control/cluster/pki"
	"skiff.dev/skiff/control/server"
	"skiff.dev/skiff/node"
)

// secureCluster is three servers and two agents, in this process, on
// loopback, with TLS everywhere.
type secureCluster struct {
	t       *testing.T
	token   string
	servers []*server.Server
	dirs    []string // the servers' data dirs
	gossip  []string
	nodes   map[string]string // node name -> its data dir
	admin   *clients
	logs    *syncWriter
}

func startSecureCluster(t *testing.T) *secureCluster {
	t.Helper()
	c := &secureCluster{t: t, token: pki.NewToken(), nodes: map[string]string{}, logs: &syncWriter{w: new(bytes.Buffer)}}
	log := slog.New(slog.NewTextHandler(c.logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster log:\n%s", c.logs.String())
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for range 3 {
		c.gossip = append(c.gossip, freeHostAddr(t, "127.0.0.1", true))
	}
	for i := range 3 {
		dir := t.TempDir()
		s, err := server.New(server.Config{
			DataDir: dir, Listen: "127.0.0.1:0", RaftListen: "127.0.0.1:0", Gossip: c.gossip[i], Join: c.gossip,
			BootstrapExpect: 3, Token: c.token, EventTTL: time.Hour, Logger: log.With("server", i),
		})
		if err != nil {
			t.Fatal(err)
		}
		c.servers, c.dirs = append(c.servers, s), append(c.dirs, dir)
		wg.Go(func() {
			if err := s.Run(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("server %d: %v", i, err)
			}
		})
	}
	for i, s := range c.servers {
		select {
		case <-s.Ready():
		case <-time.After(60 * time.Second):
			t.Fatalf("server %d not ready after 60s", i)
		}
	}
	a := c.servers[0].Admin()
	admin, err := newClients(clientConfig{Server: a.Server, Token: a.Token, CA: string(a.CA)})
	if err != nil {
		t.Fatal(err)
	}
	c.admin = admin
	eventually(t, 30*time.Second, func() bool {
		_, err := admin.of(kinds.Namespace).Get(context.Background(), "", "default")
		return err == nil
	}, func() string { return "the cluster's leader did not create the default namespace" })
	// Two agents: one told its server, one finding servers by gossip.
	for i, name := range []string{"edge-1", "edge-2"} {
		dir := t.TempDir()
		t.Cleanup(func() { unmountAll(t, filepath.Join(dir, "state")) })
		cfg := node.Config{
			Name: name, DataDir: filepath.Join(dir, "data"), StateDir: filepath.Join(dir, "state"),
			CRISocket: filepath.Join(dir, "cri.sock"), AgentListen: "127.0.0.1:0", Token: c.token, Logger: log.With("node", name),
		}
		if i == 0 {
			cfg.Server = c.servers[1].Addr()
		} else {
			cfg.Join = c.gossip[2:]
		}
		n, err := node.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.nodes[name] = cfg.DataDir
		wg.Go(func() {
			if err := n.Run(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("node %s: %v", name, err)
			}
		})
		select {
		case <-n.Ready():
		case <-time.After(60 * time.Second):
			t.Fatalf("node %s not ready after 60s", name)
		}
	}
	return c
}

// nodeObj reads a Node as the admin.
func (c *secureCluster) nodeObj(name string) *skiffv1.Node {
	c.t.Helper()
	var res *connect.Response[skiffv1.Node]
	err := untilAvailable(c.t, func() (err error) {
		res, err = skiffv1connect.NewNodeServiceClient(c.admin.hc, c.admin.base).Get(context.Background(), connect.NewRequest(&skiffv1.GetRequest{Name: name}))
		return err
	})
	if err != nil {
		c.t.Fatalf("get node %s: %v", name, err)
	}
	return res.Msg
}

// untilAvailable calls f again while it fails with Unavailable ("leadership
// has moved; try again", as three servers in one loaded process may
// elect anew), as a client would, for 20s at most, and returns its last
// error.
func untilAvailable(t testing.TB, f func() error) error {
	t.Helper()
	var err error
	eventually(t, 20*time.Second, func() bool { err = f(); return connect.CodeOf(err) != connect.CodeUnavailable },
		func() string { return fmt.Sprintf("still unavailable: %v", err) })
	return err
}

// certClient is an API client that authenticates with cred's certificate
// alone (no token), as agents and servers do.
func (c *secureCluster) certClient(cred *pki.Credential) (*http.Client, string) {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cred.ClientConfig(nil), Protocols: p}}, "https://" + c.servers[0].Addr()
}

func loadCred(t *testing.T, dir, name string) *pki.Credential {
	t.Helper()
	cred, found, err := pki.LoadCredential(dir, name)
	if err != nil || !found {
		t.Fatalf("load credential %s in %s: found %v, %v", name, dir, found, err)
	}
	return cred
}

// TestSecureCluster: three servers and two agents on loopback with TLS
// everywhere, probed as an attacker on the same machine would.
func TestSecureCluster(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root: a node creates a network namespace per pod")
	}
	c := startSecureCluster(t)
	ctx := context.Background()
	members, err := skiffv1connect.NewClusterServiceClient(c.admin.hc, c.admin.base).Members(ctx, connect.NewRequest(&skiffv1.MembersRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var raftServers []*skiffv1.Member
	for _, m := range members.Msg.GetMembers() {
		if m.GetRaftAddress() != "" {
			raftServers = append(raftServers, m)
		}
	}
	if len(raftServers) != 3 {
		t.Fatalf("members: %d Raft servers, want 3: %v", len(raftServers), members.Msg.GetMembers())
	}

	t.Run("raft refuses all but members", func(t *testing.T) {
		otherCA, err := pki.NewCA(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		agentCred := loadCred(t, filepath.Join(c.nodes["edge-1"], "node", "tls"), "agent")
		for _, target := range raftServers {
			forged := forgedServerCert(t, otherCA, target.GetName())
			for _, dial := range []struct {
				name string
				cfg  *tls.Config // nil: plain TCP
			}{
				{"plain TCP", nil},
				{"a certificate from another CA", &tls.Config{Certificates: []tls.Certificate{forged}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}},
				{"an agent's certificate", agentCred.ClientConfig(nil)},
			} {
				err := forgeAppendEntries(target.GetRaftAddress(), dial.cfg)
				if err == nil {
					t.Errorf("%s: a forged AppendEntries over %s was answered", target.GetName(), dial.name)
				}
			}
		}
		// Nothing moved: the same leader, and writes still commit.
		if _, err := c.admin.of(kinds.Namespace).Create(ctx, &skiffv1.Namespace{Metadata: &skiffv1.ObjectMeta{Name: "after-forgery"}}, false); err != nil {
			t.Errorf("a write after the forgeries: %v", err)
		}
		if !strings.Contains(c.logs.String(), "store: refused a Raft connection") {
			t.Errorf("no server logged a refused Raft connection")
		}
	})

	t.Run("gossip without the key is not heard", func(t *testing.T) {
		for _, key := range [][]byte{nil, pki.GossipKey(pki.NewToken())} {
			pool, err := membership.Join(membership.Config{Name: "intruder", Role: membership.RoleAgent, Bind: "127.0.0.1:0", Peers: c.gossip[:1], SecretKey: key})
			if err == nil {
				t.Errorf("a member with key %x joined the pool", key)
			}
			if pool != nil {
				_ = pool.Shutdown()
			}
		}
		res, err := skiffv1connect.NewClusterServiceClient(c.admin.hc, c.admin.base).Members(ctx, connect.NewRequest(&skiffv1.MembersRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range res.Msg.GetMembers() {
			if m.GetName() == "intruder" {
				t.Errorf("members lists the intruder: %v", m)
			}
		}
		// The control: with the key, the same join is heard.
		pool, err := membership.Join(membership.Config{Name: "guest", Role: membership.RoleAgent, Bind: "127.0.0.1:0", Peers: c.gossip[:1], SecretKey: pki.GossipKey(c.token)})
		if err != nil {
			t.Fatalf("a member with the key: %v", err)
		}
		if err := pool.Leave(2 * time.Second); err != nil {
			t.Log(err)
		}
		_ = pool.Shutdown()
	})

	t.Run("agents answer servers only", func(t *testing.T) {
		endpoint := c.nodeObj("edge-1").GetStatus().GetAgentEndpoint()
		serverCred := loadCred(t, filepath.Join(c.dirs[0], "server", "tls"), "server")
		agent2 := loadCred(t, filepath.Join(c.nodes["edge-2"], "node", "tls"), "agent")
		call := func(cfg *tls.Config) error {
			p := new(http.Protocols)
			p.SetHTTP1(true)
			p.SetHTTP2(true)
			hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, Protocols: p}}
			_, err := skiffv1connect.NewAgentServiceClient(hc, "https://"+endpoint).ContainerLogs(ctx, connect.NewRequest(&skiffv1.ContainerLogsRequest{
				Namespace: "default", Pod: "nothing", PodUid: "x", Container: "c",
			}))
			return err
		}
		noCert := serverCred.ClientConfig(nil)
		noCert.GetClientCertificate = nil
		for name, cfg := range map[string]*tls.Config{
			"no certificate":          noCert,
			"another agent":           agent2.ClientConfig(nil),
			"a plain TLS client":      {InsecureSkipVerify: true, MinVersion: tls.VersionTLS13},
			"a certificate of no one": {InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{selfSigned(t)}},
		} {
			if err := call(cfg); err == nil || connect.CodeOf(err) == connect.CodeNotFound {
				t.Errorf("%s: the agent answered (%v)", name, err)
			}
		}
		// A server is answered: the call reaches the agent's code.
		if err := call(serverCred.ClientConfig(nil)); connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("a server's call: %v, want NotFound from the agent", err)
		}
	})

	t.Run("an agent's credential is its node's alone", func(t *testing.T) {
		hc, base := c.certClient(loadCred(t, filepath.Join(c.nodes["edge-1"], "node", "tls"), "agent"))
		nodes := skiffv1connect.NewNodeServiceClient(hc, base)
		pods := skiffv1connect.NewPodServiceClient(hc, base)
		other := c.nodeObj("edge-2")
		before := other.GetMetadata().GetResourceVersion()
		// A pod bound to edge-2.
		pod := &skiffv1.Pod{Metadata: &skiffv1.ObjectMeta{Name: "on-edge-2", Namespace: "default"}, Spec: &skiffv1.PodSpec{
			NodeName: "edge-2", RestartPolicy: "Never", Containers: []*skiffv1.Container{{Name: "c", Image: "nothing"}},
		}}
		created, err := c.admin.pods.Create(ctx, connect.NewRequest(pod))
		if err != nil {
			t.Fatalf("create a pod on edge-2: %v", err)
		}
		stolen := created.Msg
		stolen.Status = &skiffv1.PodStatus{Phase: "Succeeded"}
		tries := []struct {
			name string
			call func() error
		}{
			{"create another Node", func() error {
				_, err := nodes.Create(ctx, connect.NewRequest(&skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: "edge-9"}, Spec: &skiffv1.NodeSpec{}}))
				return err
			}},
			{"write another node's status", func() error {
				o := c.nodeObj("edge-2")
				o.Status.Conditions = nil
				_, err := nodes.UpdateStatus(ctx, connect.NewRequest(o))
				return err
			}},
			{"delete another node", func() error {
				_, err := nodes.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: "edge-2"}))
				return err
			}},
			{"set another node's pod to Succeeded", func() error {
				_, err := pods.UpdateStatus(ctx, connect.NewRequest(stolen))
				return err
			}},
			{"read another node's pod", func() error {
				_, err := pods.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Namespace: "default", Name: "on-edge-2"}))
				return err
			}},
			{"bind a pod", func() error {
				_, err := pods.Bind(ctx, connect.NewRequest(&skiffv1.BindRequest{Namespace: "default", Name: "on-edge-2", NodeName: "edge-1"}))
				return err
			}},
			{"list every pod", func() error {
				_, err := pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
				return err
			}},
		}
		for _, tt := range tries {
			if err := tt.call(); connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Errorf("edge-1's credential could %s: %v, want PermissionDenied", tt.name, err)
			}
		}
		if n := c.nodeObj("edge-2"); n.GetStatus().GetConditions() == nil {
			t.Errorf("edge-2's status lost its conditions (was at revision %d)", before)
		}
		p, err := c.admin.pods.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Namespace: "default", Name: "on-edge-2"}))
		if err != nil || p.Msg.GetStatus().GetPhase() == "Succeeded" || p.Msg.GetSpec().GetNodeName() != "edge-2" {
			t.Errorf("edge-2's pod after edge-1's tries: %v, %v", p.Msg.GetStatus(), err)
		}
		if _, err := nodes.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: "edge-1"})); err != nil {
			t.Errorf("edge-1 reading its own Node: %v", err)
		}
	})

	t.Run("an admin cannot point the server at another address", func(t *testing.T) {
		// A pod on edge-1 whose logs the server reads from edge-1's agent.
		root := newRoot()
		root.SetArgs([]string{"image", "import", "--data-dir", c.nodes["edge-1"], "hello", buildWasm(t, "../../examples/hello")})
		root.SetOut(io.Discard)
		if err := root.Execute(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.admin.pods.Create(ctx, connect.NewRequest(&skiffv1.Pod{Metadata: &skiffv1.ObjectMeta{Name: "hello", Namespace: "default"}, Spec: &skiffv1.PodSpec{
			NodeName: "edge-1", RestartPolicy: "Never", Containers: []*skiffv1.Container{{Name: "hello", Image: "hello"}},
		}})); err != nil {
			t.Fatal(err)
		}
		var phase string
		eventually(t, 30*time.Second, func() bool {
			p, err := c.admin.pods.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Namespace: "default", Name: "hello"}))
			if err != nil {
				phase = err.Error()
				return false
			}
			phase = p.Msg.GetStatus().GetPhase()
			return phase == "Succeeded" || phase == "Failed"
		}, func() string { return "the hello pod on edge-1 did not finish: " + phase })
		logs := func() (string, error) {
			var res *connect.Response[skiffv1.PodLogsResponse]
			err := untilAvailable(t, func() (err error) {
				res, err = c.admin.pods.Logs(ctx, connect.NewRequest(&skiffv1.PodLogsRequest{Namespace: "default", Name: "hello"}))
				return err
			})
			if err != nil {
				return "", err
			}
			return string(res.Msg.GetData()), nil
		}
		if out, err := logs(); err != nil || !strings.Contains(out, "This is a WebAssembly module running in a skiff pod") {
			t.Fatalf("logs of hello before the edit: %q, %v", out, err)
		}
		n := c.nodeObj("edge-1")
		real := n.GetStatus().GetAgentEndpoint()
		n.Status.AgentEndpoint = "127.0.0.1:1"
		err := untilAvailable(t, func() error {
			_, err := skiffv1connect.NewNodeServiceClient(c.admin.hc, c.admin.base).UpdateStatus(ctx, connect.NewRequest(n))
			return err
		})
		if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "status.agentEndpoint") {
			t.Errorf("an admin's edit of status.agentEndpoint: %v, want PermissionDenied naming the field", err)
		}
		if got := c.nodeObj("edge-1").GetStatus().GetAgentEndpoint(); got != real {
			t.Errorf("edge-1's agent endpoint is %q after the refused edit, was %q", got, real)
		}
		if out, err := logs(); err != nil || !strings.Contains(out, "This is a WebAssembly module running in a skiff pod") {
			t.Errorf("logs of hello after the refused edit: %q, %v", out, err)
		}
	})

	t.Run("refused credentials", func(t *testing.T) {
		// A wrong join token: refused at once, nothing kept.
		dir := t.TempDir()
		n, err := node.New(node.Config{
			Name: "edge-wrong", Server: c.servers[0].Addr(), DataDir: filepath.Join(dir, "data"), StateDir: filepath.Join(dir, "state"),
			CRISocket: filepath.Join(dir, "cri.sock"), AgentListen: "127.0.0.1:0", Token: pki.NewToken(),
		})
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		err = n.Run(rctx)
		var refused *pki.RefusedError
		if !errors.As(err, &refused) || !strings.Contains(err.Error(), "the join token was refused") {
			t.Errorf("an agent with a wrong token: %v, want the join token refused", err)
		}
		if entries, _ := os.ReadDir(filepath.Join(dir, "data")); len(entries) != 0 {
			t.Errorf("the refused agent left %d entries in its data dir", len(entries))
		}
		// A certificate from another CA at the API.
		otherCA, err := pki.NewCA(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		forged := forgedServerCert(t, otherCA, "server-forged")
		a := c.servers[0].Admin()
		cfg := clientConfig{Server: a.Server, CA: string(a.CA)}
		tc, err := cfg.tlsConfig()
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{forged}
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
		_, err = skiffv1connect.NewNamespaceServiceClient(hc, cfg.baseURL()).List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
		if err == nil {
			t.Errorf("a client certificate from another CA was let in")
		}
		// An expired token, replayed.
		ac := skiffv1connect.NewAuthServiceClient(c.admin.hc, c.admin.base)
		res, err := ac.CreateToken(ctx, connect.NewRequest(&skiffv1.CreateTokenRequest{Namespace: "default", Role: "view", TtlSeconds: 1}))
		if err != nil {
			t.Fatal(err)
		}
		short, err := newClients(clientConfig{Server: a.Server, CA: string(a.CA), Token: res.Msg.GetToken()})
		if err != nil {
			t.Fatal(err)
		}
		var last error
		eventually(t, 10*time.Second, func() bool {
			_, last = short.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{Namespace: "default"}))
			return connect.CodeOf(last) == connect.CodeUnauthenticated
		}, func() string { return fmt.Sprintf("a token past its TTL: %v", last) })
		if !strings.Contains(last.Error(), "expired") {
			t.Errorf("a token past its TTL: %v, want it to say expired", last)
		}
	})
}

// forgeAppendEntries sends a forged AppendEntries, from a later term, to a
// Raft address over TLS with cfg (plain TCP when nil), and returns the
// transport's error: nil means the peer answered it.
func forgeAppendEntries(target string, cfg *tls.Config) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	tr := raft.NewNetworkTransport(&forgeLayer{Listener: ln, cfg: cfg}, 1, 3*time.Second, io.Discard)
	defer tr.Close()
	var resp raft.AppendEntriesResponse
	return tr.AppendEntries("forger", raft.ServerAddress(target), &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ID: []byte("forger"), Addr: []byte(ln.Addr().String())},
		Term:      1 << 40, LeaderCommitIndex: 1 << 40,
		Entries: []*raft.Log{{Index: 1 << 30, Term: 1 << 40, Type: raft.LogCommand, Data: []byte("forged")}},
	}, &resp)
}

// forgeLayer dials with an optional TLS config.
type forgeLayer struct {
	net.Listener
	cfg *tls.Config
}

func (l *forgeLayer) Addr() net.Addr { return l.Listener.Addr() }

func (l *forgeLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if l.cfg == nil {
		return d.Dial("tcp", string(address))
	}
	return tls.DialWithDialer(d, "tcp", string(address), l.cfg)
}

// forgedServerCert is a server certificate named id, from ca.
func forgedServerCert(t *testing.T, ca *pki.CA, id string) tls.Certificate {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.Issue(pki.Identity{Role: pki.RoleServer, Name: id}, []string{"127.0.0.1"}, key.Public(), time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("no PEM certificate issued")
	}
	return tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key}
}

// selfSigned is a certificate of its own CA: no cluster's.
func selfSigned(t *testing.T) tls.Certificate {
	ca, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return forgedServerCert(t, ca, "nobody")
}
