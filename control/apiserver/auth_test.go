package apiserver

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/store"
)

// testCA makes client certificates whose common name is the principal:
// "server:<id>" or "node:<name>".
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
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

func (ca *testCA) client(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// nodeEndpoints is the agent address each test node's certificate carries.
var nodeEndpoints = map[string]string{"n1": "10.0.0.1:10250", "n2": "10.0.0.2:10250"}

// testPeer maps a test certificate's common name to its principal.
func testPeer(cs *tls.ConnectionState) (Principal, bool) {
	cn := cs.VerifiedChains[0][0].Subject.CommonName
	if id, ok := strings.CutPrefix(cn, "server:"); ok {
		return Principal{Name: "server:" + id, Server: true}, true
	}
	if n, ok := strings.CutPrefix(cn, "node:"); ok {
		return Principal{Name: cn, Node: n, Endpoint: nodeEndpoints[n]}, true
	}
	return Principal{}, false
}

// testClock is an injected clock.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// authEnv is an API server with authentication over a real store, served
// over TLS that asks for client certificates.
type authEnv struct {
	st    *store.Store
	srv   *httptest.Server
	ca    *testCA
	clock *testClock
	logs  *syncBuffer
	// bootstrap is the bootstrap admin's bearer token.
	bootstrap string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newAuthEnv(t *testing.T) *authEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &authEnv{
		st: st, ca: newTestCA(t), logs: &syncBuffer{},
		clock:     &testClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)},
		bootstrap: NewBearerToken(),
	}
	s := New(Config{
		Store:   st,
		Logger:  slog.New(slog.NewJSONHandler(e.logs, nil)),
		Members: func(context.Context) ([]*skiffv1.Member, error) { return nil, nil },
		Auth:    &AuthConfig{Peer: testPeer, BootstrapToken: e.bootstrap, Now: e.clock.Now},
	})
	for i := 0; i < 2; i++ {
		if err := s.Init(ctx); err != nil {
			t.Fatalf("Init %d: %v", i+1, err)
		}
	}
	e.srv = httptest.NewUnstartedServer(s.Handler())
	e.srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: e.ca.pool}
	e.srv.StartTLS()
	t.Cleanup(e.srv.Close)
	return e
}

// cred is how a test client authenticates: a certificate's common name,
// a bearer token, extra headers; the zero cred is anonymous.
type cred struct {
	cert   string
	token  string
	header http.Header
}

// headerTransport adds a bearer token and headers to every request.
type headerTransport struct {
	next   http.RoundTripper
	token  string
	header http.Header
}

func (h *headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if h.token != "" {
		r.Header.Set("Authorization", "Bearer "+h.token)
	}
	for k, vs := range h.header {
		r.Header[k] = vs
	}
	return h.next.RoundTrip(r)
}

// testClients are the API's clients for one credential.
type testClients struct {
	pods        skiffv1connect.PodServiceClient
	nodes       skiffv1connect.NodeServiceClient
	namespaces  skiffv1connect.NamespaceServiceClient
	events      skiffv1connect.EventServiceClient
	services    skiffv1connect.ServiceServiceClient
	endpoints   skiffv1connect.EndpointsServiceClient
	deployments skiffv1connect.DeploymentServiceClient
	replicaSets skiffv1connect.ReplicaSetServiceClient
	cluster     skiffv1connect.ClusterServiceClient
	auth        skiffv1connect.AuthServiceClient
}

func (e *authEnv) clients(t *testing.T, c cred) *testClients {
	t.Helper()
	tr := e.srv.Client().Transport.(*http.Transport).Clone()
	if c.cert != "" {
		tr.TLSClientConfig.Certificates = []tls.Certificate{e.ca.client(t, c.cert)}
	}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: &headerTransport{next: tr, token: c.token, header: c.header}}
	u := e.srv.URL
	return &testClients{
		pods:        skiffv1connect.NewPodServiceClient(hc, u),
		nodes:       skiffv1connect.NewNodeServiceClient(hc, u),
		namespaces:  skiffv1connect.NewNamespaceServiceClient(hc, u),
		events:      skiffv1connect.NewEventServiceClient(hc, u),
		services:    skiffv1connect.NewServiceServiceClient(hc, u),
		endpoints:   skiffv1connect.NewEndpointsServiceClient(hc, u),
		deployments: skiffv1connect.NewDeploymentServiceClient(hc, u),
		replicaSets: skiffv1connect.NewReplicaSetServiceClient(hc, u),
		cluster:     skiffv1connect.NewClusterServiceClient(hc, u),
		auth:        skiffv1connect.NewAuthServiceClient(hc, u),
	}
}

// putToken stores a token record directly and returns its bearer string.
func (e *authEnv) putToken(t *testing.T, id, ns, role string, expires time.Time) string {
	t.Helper()
	secret := "s3cret" + id
	val, err := json.Marshal(tokenRecord{ID: id, SecretHash: hashSecret(secret), Namespace: ns, Role: role, Created: e.clock.Now(), Expires: expires})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := e.st.Get(ctx, tokenKey(id)); err == nil {
		return id + "." + secret
	}
	if _, err := e.st.Txn(ctx, store.Txn{Ops: []store.Op{store.CreateOp(tokenKey(id), val)}}); err != nil {
		t.Fatal(err)
	}
	return id + "." + secret
}

// state is every key of the store with the revision that last changed it.
func (e *authEnv) state(t *testing.T) []string {
	t.Helper()
	kvs, _, err := e.st.List(context.Background(), "/")
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, fmt.Sprintf("%s@%d", kv.Key, kv.ModRevision))
	}
	return out
}

func testPod(ns, name, node string) *skiffv1.Pod {
	p := pod(name)
	p.Metadata.Namespace = ns
	p.Spec.NodeName = node
	return p
}

func testEvent(ns, name string) *skiffv1.Event {
	return &skiffv1.Event{
		Metadata:       &skiffv1.ObjectMeta{Namespace: ns, Name: name},
		InvolvedObject: &skiffv1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "p-free"},
		Reason:         "Test", Message: "test", Type: "Normal", Source: &skiffv1.EventSource{Component: "test"},
	}
}

// fixture ids of tokens a revoke may target.
const (
	teamTokenID    = "teamtokenaaa"
	clusterTokenID = "clustertoken"
)

// reset puts back the objects the table's calls act on, as the cluster's
// server would, so that each call finds them.
func (e *authEnv) reset(t *testing.T, srv *testClients) {
	t.Helper()
	ctx := context.Background()
	ignore := func(err error) {
		t.Helper()
		if err != nil && connect.CodeOf(err) != connect.CodeAlreadyExists {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{"team", "other", "empty"} {
		_, err := srv.namespaces.Create(ctx, connect.NewRequest(&skiffv1.Namespace{Metadata: &skiffv1.ObjectMeta{Name: ns}}))
		ignore(err)
	}
	for _, n := range []string{"n1", "n2"} {
		_, err := srv.nodes.Create(ctx, connect.NewRequest(&skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: n}}))
		ignore(err)
	}
	// p-free must be unbound, whatever an earlier call did to it.
	if res, err := srv.pods.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Namespace: "team", Name: "p-free"})); err == nil && res.Msg.Spec.NodeName != "" {
		if _, err := srv.pods.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Namespace: "team", Name: "p-free", GracePeriodSeconds: proto.Int64(0)})); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []*skiffv1.Pod{testPod("team", "p-n1", "n1"), testPod("team", "p-n2", "n2"), testPod("team", "p-free", ""), testPod("other", "p-o", "")} {
		_, err := srv.pods.Create(ctx, connect.NewRequest(p))
		ignore(err)
	}
	for _, ev := range []*skiffv1.Event{testEvent("team", "e1"), testEvent("other", "e2")} {
		_, err := srv.events.Create(ctx, connect.NewRequest(ev))
		ignore(err)
	}
	_, err := srv.services.Create(ctx, connect.NewRequest(testService("team", "s1")))
	ignore(err)
	_, err = srv.endpoints.Create(ctx, connect.NewRequest(testEndpoints("team", "s1")))
	ignore(err)
	e.putToken(t, teamTokenID, "team", RoleView, time.Time{})
	e.putToken(t, clusterTokenID, "", RoleView, time.Time{})
}

func testService(ns, name string) *skiffv1.Service {
	return &skiffv1.Service{
		Metadata: &skiffv1.ObjectMeta{Namespace: ns, Name: name},
		Spec:     &skiffv1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: []*skiffv1.ServicePort{{Port: 80}}},
	}
}

func testEndpoints(ns, name string) *skiffv1.Endpoints {
	return &skiffv1.Endpoints{
		Metadata: &skiffv1.ObjectMeta{Namespace: ns, Name: name},
		Subsets: []*skiffv1.EndpointSubset{{
			Addresses: []*skiffv1.EndpointAddress{{Ip: "10.244.0.9"}},
			Ports:     []*skiffv1.EndpointPort{{Port: 8080}},
		}},
	}
}

func wantRefusal(t *testing.T, what string, err error, code connect.Code, msg string) {
	t.Helper()
	if connect.CodeOf(err) != code || !strings.Contains(err.Error(), msg) {
		t.Errorf("%s: got %v, want %v with %q", what, err, code, msg)
	}
}

// TestNodeRestriction: an agent acts on its own Node and the pods bound to
// it alone, and its Node's agentEndpoint comes from its certificate.
func TestNodeRestriction(t *testing.T) {
	e := newAuthEnv(t)
	ctx := context.Background()
	server := e.clients(t, cred{cert: "server:s1"})
	e.reset(t, server)
	n1 := e.clients(t, cred{cert: "node:n1"})
	admin := e.clients(t, cred{token: e.bootstrap})

	_, err := n1.nodes.Create(ctx, connect.NewRequest(&skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: "n9"}}))
	wantRefusal(t, "create another node", err, connect.CodePermissionDenied, `node:n1 cannot create node "n9": a node may create only its own Node "n1"`)
	_, err = n1.nodes.UpdateStatus(ctx, connect.NewRequest(&skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: "n2"}, Status: &skiffv1.NodeStatus{}}))
	wantRefusal(t, "update another node's status", err, connect.CodePermissionDenied, `cannot updatestatus node "n2"`)
	p := testPod("team", "p-n2", "n2")
	p.Status = &skiffv1.PodStatus{Phase: "Failed"}
	_, err = n1.pods.UpdateStatus(ctx, connect.NewRequest(p))
	wantRefusal(t, "status of another node's pod", err, connect.CodePermissionDenied, `node:n1 cannot updatestatus pod "team/p-n2": it is bound to node n2, not to n1`)
	// The request may claim the pod is its own: the stored pod decides.
	p.Spec.NodeName = "n1"
	_, err = n1.pods.UpdateStatus(ctx, connect.NewRequest(p))
	wantRefusal(t, "status of another node's pod, claimed", err, connect.CodePermissionDenied, "it is bound to node n2")
	// A stale resourceVersion changes nothing: the refusal comes before the
	// conflict, which would tell the caller the pod had changed.
	p.Metadata.ResourceVersion = 1
	_, err = n1.pods.UpdateStatus(ctx, connect.NewRequest(p))
	wantRefusal(t, "status of another node's pod, stale version", err, connect.CodePermissionDenied, "it is bound to node n2")
	_, err = n1.pods.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Namespace: "team", Name: "p-n2"}))
	wantRefusal(t, "delete another node's pod", err, connect.CodePermissionDenied, "it is bound to node n2")
	_, err = n1.pods.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Namespace: "team", Name: "p-free"}))
	wantRefusal(t, "get an unbound pod", err, connect.CodePermissionDenied, "it is bound to no node")
	_, err = n1.pods.Bind(ctx, connect.NewRequest(&skiffv1.BindRequest{Namespace: "team", Name: "p-free", NodeName: "n1"}))
	wantRefusal(t, "bind", err, connect.CodePermissionDenied, "node:n1 cannot bind pods in namespace team")
	_, err = n1.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
	wantRefusal(t, "list every pod", err, connect.CodePermissionDenied, `node:n1 cannot list pods without the field selector spec.nodeName=n1 (got "")`)
	_, err = n1.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{FieldSelector: "spec.nodeName=n2"}))
	wantRefusal(t, "list another node's pods", err, connect.CodePermissionDenied, "without the field selector spec.nodeName=n1")
	_, err = n1.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{FieldSelector: "spec.nodeName=n1,status.phase!=x"}))
	wantRefusal(t, "list with more than its selector", err, connect.CodePermissionDenied, "without the field selector spec.nodeName=n1")
	err = watchErr(ctx, func(ctx context.Context) (*connect.ServerStreamForClient[skiffv1.PodWatchEvent], error) {
		return n1.pods.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{}))
	})
	wantRefusal(t, "watch every pod", err, connect.CodePermissionDenied, "without the field selector spec.nodeName=n1")
	// Its own pods, through its own selector.
	res, err := n1.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{FieldSelector: "spec.nodeName=n1"}))
	if err != nil || len(res.Msg.Items) != 1 || res.Msg.Items[0].Metadata.Name != "p-n1" {
		t.Errorf("list its own pods: %v, %v", res, err)
	}

	// agentEndpoint: from the certificate, whatever the request says.
	_, err = server.nodes.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: "n1"}))
	if err != nil {
		t.Fatal(err)
	}
	created, err := n1.nodes.Create(ctx, connect.NewRequest(&skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: "n1"}, Status: &skiffv1.NodeStatus{AgentEndpoint: "evil.example:80"}}))
	if err != nil {
		t.Fatal(err)
	}
	if got := created.Msg.GetStatus().GetAgentEndpoint(); got != nodeEndpoints["n1"] {
		t.Errorf("agentEndpoint on create: %q, want the certificate's %q", got, nodeEndpoints["n1"])
	}
	updated, err := n1.nodes.UpdateStatus(ctx, connect.NewRequest(&skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: "n1"}, Status: &skiffv1.NodeStatus{AgentEndpoint: "evil.example:80", Runtimes: []string{"wasm"}}}))
	if err != nil {
		t.Fatal(err)
	}
	if got := updated.Msg.GetStatus().GetAgentEndpoint(); got != nodeEndpoints["n1"] {
		t.Errorf("agentEndpoint on status update: %q, want the certificate's %q", got, nodeEndpoints["n1"])
	}
	// An admin may report a node's status but not move its agent.
	before := e.state(t)
	_, err = admin.nodes.UpdateStatus(ctx, connect.NewRequest(&skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: "n1"}, Status: &skiffv1.NodeStatus{AgentEndpoint: "evil.example:80"}}))
	wantRefusal(t, "admin moves the agent", err, connect.CodePermissionDenied, agentEndpointRefusal)
	_, err = admin.nodes.Create(ctx, connect.NewRequest(&skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: "n7"}, Status: &skiffv1.NodeStatus{AgentEndpoint: "evil.example:80"}}))
	wantRefusal(t, "admin creates a node with an agent", err, connect.CodePermissionDenied, agentEndpointRefusal)
	if after := e.state(t); !slices.Equal(before, after) {
		t.Errorf("refused calls changed the store:\nbefore %v\nafter  %v", before, after)
	}
	// Keeping the endpoint as stored is no change: the node lifecycle
	// controller reports Ready=Unknown this way.
	_, err = admin.nodes.UpdateStatus(ctx, connect.NewRequest(&skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: "n1"}, Status: &skiffv1.NodeStatus{AgentEndpoint: nodeEndpoints["n1"], Runtimes: []string{"runc"}}}))
	if err != nil {
		t.Errorf("admin status update keeping the endpoint: %v", err)
	}
}

// TestPeerHeader: a server's certificate vouches for the caller it
// forwards; anyone else's Skiff-Peer header is ignored.
func TestPeerHeader(t *testing.T) {
	e := newAuthEnv(t)
	ctx := context.Background()
	whoami := func(c cred) (*skiffv1.WhoAmIResponse, error) {
		res, err := e.clients(t, c).auth.WhoAmI(ctx, connect.NewRequest(&skiffv1.WhoAmIRequest{}))
		if err != nil {
			return nil, err
		}
		return res.Msg, nil
	}
	peer := func(p Principal) http.Header {
		return http.Header{PeerHeader: {PeerHeaderValue(p)}, forwardedByHeader: {"s1"}}
	}
	n2 := Principal{Name: "node:n2", Node: "n2", Endpoint: "10.0.0.2:10250"}
	viewer := e.putToken(t, "viewallaaaaa", "", RoleView, time.Time{})
	tests := []struct {
		name     string
		cred     cred
		wantName string
		wantCode connect.Code
	}{
		{"from a server", cred{cert: "server:s1", header: peer(n2)}, "node:n2", 0},
		{"from a server, for a server", cred{cert: "server:s1", header: peer(Principal{Name: "server:s2", Server: true})}, "server:s2", 0},
		{"from a node", cred{cert: "node:n1", header: peer(Principal{Name: "server:s2", Server: true})}, "node:n1", 0},
		{"with a token", cred{token: viewer, header: peer(Principal{Name: "server:s2", Server: true})}, "token:viewallaaaaa", 0},
		{"from nobody", cred{header: peer(Principal{Name: "server:s2", Server: true})}, "", connect.CodeUnauthenticated},
		{"forwarded without credentials", cred{cert: "server:s1", header: http.Header{forwardedByHeader: {"s1"}}}, "", connect.CodeUnauthenticated},
		{"a server's own call", cred{cert: "server:s1"}, "server:s1", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := whoami(tt.cred)
			if tt.wantCode != 0 {
				if connect.CodeOf(err) != tt.wantCode {
					t.Errorf("got %v, %v; want %v", got, err, tt.wantCode)
				}
				return
			}
			if err != nil || got.Name != tt.wantName {
				t.Errorf("got %v, %v; want %s", got, err, tt.wantName)
			}
		})
	}
	// The forwarded node is held to the node's rules, and its endpoint is
	// the one the server vouches for.
	c := e.clients(t, cred{cert: "server:s1", header: peer(n2)})
	res, err := c.nodes.Create(ctx, connect.NewRequest(&skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: "n2"}}))
	if err != nil || res.Msg.GetStatus().GetAgentEndpoint() != n2.Endpoint {
		t.Errorf("forwarded node create: %v, %v", res, err)
	}
	_, err = c.nodes.Create(ctx, connect.NewRequest(&skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: "n3"}}))
	wantRefusal(t, "forwarded node creates another", err, connect.CodePermissionDenied, "node:n2 cannot create node")
}

// TestTokens: a token is shown once, works until revoked or expired, and
// bad input or a bad token is refused with a clear reason.
func TestTokens(t *testing.T) {
	e := newAuthEnv(t)
	ctx := context.Background()
	server := e.clients(t, cred{cert: "server:s1"})
	e.reset(t, server)
	admin := e.clients(t, cred{token: e.bootstrap})

	for _, tt := range []struct {
		req  *skiffv1.CreateTokenRequest
		want string
	}{
		{&skiffv1.CreateTokenRequest{Role: "root"}, `role: unsupported value "root"`},
		{&skiffv1.CreateTokenRequest{Role: RoleView, TtlSeconds: -1}, "ttlSeconds: invalid value -1"},
		{&skiffv1.CreateTokenRequest{Role: RoleView, Namespace: "Not_A_Label"}, `namespace: invalid value "Not_A_Label"`},
	} {
		_, err := admin.auth.CreateToken(ctx, connect.NewRequest(tt.req))
		wantRefusal(t, "create "+tt.want, err, connect.CodeInvalidArgument, tt.want)
	}
	_, err := admin.auth.CreateToken(ctx, connect.NewRequest(&skiffv1.CreateTokenRequest{Role: RoleView, Namespace: "missing"}))
	wantRefusal(t, "create in a missing namespace", err, connect.CodeNotFound, `namespace "missing" not found`)

	res, err := admin.auth.CreateToken(ctx, connect.NewRequest(&skiffv1.CreateTokenRequest{Namespace: "team", Role: RoleEdit, TtlSeconds: 3600, Description: "ci"}))
	if err != nil {
		t.Fatal(err)
	}
	tok, info := res.Msg.Token, res.Msg.Info
	id, secret, ok := splitBearer(tok)
	if !ok || id != info.Id || len(secret) != 52 {
		t.Fatalf("token %q, info %v: want <12-char id>.<52-char secret>", tok, info)
	}
	if !info.Expires.AsTime().Equal(e.clock.Now().Add(time.Hour)) || info.CreatedBy != "token:"+strings.SplitN(e.bootstrap, ".", 2)[0] {
		t.Errorf("token info: %v", info)
	}
	kv, err := e.st.Get(ctx, tokenKey(id))
	if err != nil || bytes.Contains(kv.Value, []byte(secret)) {
		t.Errorf("stored token %s holds its secret (or %v)", kv.Value, err)
	}
	ci := e.clients(t, cred{token: tok})
	who, err := ci.auth.WhoAmI(ctx, connect.NewRequest(&skiffv1.WhoAmIRequest{}))
	if err != nil || who.Msg.Name != "token:"+id || who.Msg.Role != RoleEdit || who.Msg.Namespace != "team" || who.Msg.Kind != "token" || !who.Msg.Expires.AsTime().Equal(info.Expires.AsTime()) {
		t.Errorf("whoami: %v, %v", who, err)
	}
	can, err := ci.auth.CanI(ctx, connect.NewRequest(&skiffv1.CanIRequest{Verb: "create", Kind: "Pod", Namespace: "team"}))
	if err != nil || !can.Msg.Allowed {
		t.Errorf("can-i create pods in team: %v, %v", can, err)
	}
	can, err = ci.auth.CanI(ctx, connect.NewRequest(&skiffv1.CanIRequest{Verb: "create", Kind: "po", Namespace: "other"}))
	if err != nil || can.Msg.Allowed || can.Msg.Reason != "token:"+id+" cannot create pods in namespace other" {
		t.Errorf("can-i create pods in other: %v, %v", can, err)
	}
	list, err := admin.auth.ListTokens(ctx, connect.NewRequest(&skiffv1.ListTokensRequest{Namespace: "team"}))
	if err != nil || len(list.Msg.Tokens) != 2 { // the fixture's and this one
		t.Errorf("list team tokens: %v, %v", list, err)
	}
	// A namespaced admin lists its namespace's tokens without naming it.
	teamAdmin := e.clients(t, cred{token: e.putToken(t, "adminteamaaa", "team", RoleAdmin, time.Time{})})
	list, err = teamAdmin.auth.ListTokens(ctx, connect.NewRequest(&skiffv1.ListTokensRequest{}))
	if err != nil || len(list.Msg.Tokens) != 3 {
		t.Errorf("a team admin lists its tokens: %v, %v", list, err)
	}
	_, err = teamAdmin.auth.RevokeToken(ctx, connect.NewRequest(&skiffv1.RevokeTokenRequest{Id: clusterTokenID}))
	wantRefusal(t, "a team admin revokes a cluster token", err, connect.CodePermissionDenied, "token:adminteamaaa cannot delete tokens at the cluster scope")

	// Expiry, by the injected clock.
	e.clock.add(time.Hour)
	_, err = ci.auth.WhoAmI(ctx, connect.NewRequest(&skiffv1.WhoAmIRequest{}))
	wantRefusal(t, "expired", err, connect.CodeUnauthenticated, "token "+id+" expired at "+info.Expires.AsTime().UTC().Format(time.RFC3339))
	e.clock.add(-time.Hour)

	if _, err := admin.auth.RevokeToken(ctx, connect.NewRequest(&skiffv1.RevokeTokenRequest{Id: id})); err != nil {
		t.Fatal(err)
	}
	_, err = ci.auth.WhoAmI(ctx, connect.NewRequest(&skiffv1.WhoAmIRequest{}))
	wantRefusal(t, "revoked", err, connect.CodeUnauthenticated, "invalid bearer token")
	_, err = e.clients(t, cred{token: id + ".x" + secret}).auth.WhoAmI(ctx, connect.NewRequest(&skiffv1.WhoAmIRequest{}))
	wantRefusal(t, "wrong secret", err, connect.CodeUnauthenticated, "invalid bearer token")
	_, err = e.clients(t, cred{token: "garbage"}).auth.WhoAmI(ctx, connect.NewRequest(&skiffv1.WhoAmIRequest{}))
	wantRefusal(t, "malformed", err, connect.CodeUnauthenticated, "invalid bearer token")
	_, err = e.clients(t, cred{}).auth.WhoAmI(ctx, connect.NewRequest(&skiffv1.WhoAmIRequest{}))
	wantRefusal(t, "none", err, connect.CodeUnauthenticated, "no credentials: send a bearer token")

	// /healthz needs no credentials.
	resp, err := e.srv.Client().Get(e.srv.URL + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("healthz: %v, %v", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}
}

// TestBootstrapTokenOnce: Init stores the bootstrap token once in the
// cluster's life, so a revoked one stays revoked across restarts.
func TestBootstrapTokenOnce(t *testing.T) {
	e := newAuthEnv(t)
	ctx := context.Background()
	admin := e.clients(t, cred{token: e.bootstrap})
	id, _, _ := splitBearer(e.bootstrap)
	if _, err := admin.auth.RevokeToken(ctx, connect.NewRequest(&skiffv1.RevokeTokenRequest{Id: id})); err != nil {
		t.Fatal(err)
	}
	s := New(Config{Store: e.st, Auth: &AuthConfig{BootstrapToken: e.bootstrap}})
	if err := s.Init(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := admin.auth.WhoAmI(ctx, connect.NewRequest(&skiffv1.WhoAmIRequest{}))
	wantRefusal(t, "bootstrap token after revoke and restart", err, connect.CodeUnauthenticated, "invalid bearer token")
	if err := New(Config{Store: e.st, Auth: &AuthConfig{BootstrapToken: "bad"}}).Init(ctx); err == nil {
		t.Error("Init with a malformed bootstrap token: no error")
	}
	// Another bootstrap token (the store restored into a cluster with a new
	// join token) is stored, once; the revoked one stays revoked.
	next := NewBearerToken()
	for range 2 {
		if err := New(Config{Store: e.st, Auth: &AuthConfig{BootstrapToken: next}}).Init(ctx); err != nil {
			t.Fatal(err)
		}
	}
	res, err := e.clients(t, cred{token: next}).auth.WhoAmI(ctx, connect.NewRequest(&skiffv1.WhoAmIRequest{}))
	if err != nil || res.Msg.GetRole() != RoleAdmin {
		t.Errorf("a new bootstrap token after a restore: %v, %v", res, err)
	}
	_, err = admin.auth.WhoAmI(ctx, connect.NewRequest(&skiffv1.WhoAmIRequest{}))
	wantRefusal(t, "the revoked bootstrap token after a new one", err, connect.CodeUnauthenticated, "invalid bearer token")
}

// TestAuditLog: every refused call is logged at Warn with who, what and why.
func TestAuditLog(t *testing.T) {
	e := newAuthEnv(t)
	ctx := context.Background()
	e.reset(t, e.clients(t, cred{cert: "server:s1"}))
	viewer := e.clients(t, cred{token: e.putToken(t, "viewteamaaaa", "team", RoleView, time.Time{})})
	_, err := viewer.pods.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Namespace: "team", Name: "p-free"}))
	wantRefusal(t, "viewer deletes", err, connect.CodePermissionDenied, "token:viewteamaaaa cannot delete pods in namespace team")
	_, err = e.clients(t, cred{}).pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
	wantRefusal(t, "anonymous lists", err, connect.CodeUnauthenticated, "no credentials")

	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(e.logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["msg"] == "audit: refused" {
			lines = append(lines, m)
		}
	}
	want := []map[string]any{
		{"level": "WARN", "who": "token:viewteamaaaa", "verb": "delete", "kind": "pods", "ns": "team", "name": "p-free", "why": "token:viewteamaaaa cannot delete pods in namespace team"},
		{"level": "WARN", "who": "anonymous", "verb": "list", "kind": "pods", "ns": "", "name": "", "why": errNoCredentials.Error()},
	}
	if len(lines) != len(want) {
		t.Fatalf("audit lines: %v, want %d", lines, len(want))
	}
	for i, w := range want {
		for k, v := range w {
			if lines[i][k] != v {
				t.Errorf("audit line %d: %s = %v, want %v", i, k, lines[i][k], v)
			}
		}
		if r, _ := lines[i]["remote"].(string); !strings.HasPrefix(r, "127.0.0.1:") {
			t.Errorf("audit line %d: remote %q", i, r)
		}
	}
}

// TestWithPrincipal: an in-process caller's principal is authorized as a
// remote one's.
func TestWithPrincipal(t *testing.T) {
	z := &authorizer{log: slog.New(slog.DiscardHandler)}
	ctx := WithPrincipal(context.Background(), Principal{Name: "token:x", Role: RoleView, Namespace: "team"})
	if err := z.check(ctx, "/skiff.v1.PodService/Get", &skiffv1.GetRequest{Namespace: "team", Name: "a"}); err != nil {
		t.Errorf("view gets a pod: %v", err)
	}
	err := z.check(ctx, "/skiff.v1.PodService/Create", testPod("team", "a", ""))
	wantRefusal(t, "view creates a pod", err, connect.CodePermissionDenied, "token:x cannot create pods in namespace team")
	err = z.check(context.Background(), "/skiff.v1.PodService/Get", &skiffv1.GetRequest{Name: "a"})
	wantRefusal(t, "no principal", err, connect.CodeUnauthenticated, "no credentials")
	if p, ok := PrincipalFrom(ctx); !ok || p.Name != "token:x" {
		t.Errorf("PrincipalFrom: %v, %v", p, ok)
	}
}
