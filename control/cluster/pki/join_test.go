package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testServerToken = "skiff-servers-token-0123456789"
	testAgentToken  = "skiff-agents-token-0123456789"
)

// syncBuffer is a log sink the handler's goroutines may write to.
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

// joinServer is a server answering joins over TLS with its own
// certificate from ca, as a skiff server would.
type joinServer struct {
	ca   *CA
	addr string // localhost:port: a name, so crypto/tls asks GetCertificate (see startTLS)
	logs *syncBuffer
}

// startTLS serves h over TLS with cred's ServerConfig. httptest's
// StartTLS adds its own certificate to Certificates, which crypto/tls
// presents to a client that sends no server name; dialing "localhost"
// sends one, so the credential's GetCertificate answers.
func startTLS(t *testing.T, h http.Handler, cred *Credential) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("POST "+JoinPath, h)
	ts := httptest.NewUnstartedServer(mux)
	ts.TLS = cred.ServerConfig(tls.VerifyClientCertIfGiven, nil)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	_, port, err := net.SplitHostPort(ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("localhost", port)
}

func startJoinServer(t *testing.T, cfg HandlerConfig) *joinServer {
	t.Helper()
	ca := newTestCA(t, time.Now())
	cred := newTestCred(t, ca, serverID, []string{"localhost", "127.0.0.1"}, time.Now(), time.Hour)
	logs := &syncBuffer{}
	if cfg.CA == nil {
		cfg.CA = func() *CA { return ca }
	}
	if cfg.ServerToken == "" {
		cfg.ServerToken = testServerToken
	}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	return &joinServer{ca: ca, addr: startTLS(t, NewJoinHandler(cfg), cred), logs: logs}
}

func joinRequestFor(t *testing.T, server, token string, id Identity) JoinRequest {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return JoinRequest{Server: server, Token: token, Identity: id, Hosts: []string{"127.0.0.1", "n1.example"}, Key: key, Timeout: 5 * time.Second}
}

func TestJoin(t *testing.T) {
	js := startJoinServer(t, HandlerConfig{AgentToken: testAgentToken, Lifetime: 2 * time.Hour})
	for _, tc := range []struct {
		name  string
		token string
		id    Identity
	}{
		{"agent with the agents' token", testAgentToken, agentID},
		{"agent with the servers' token", testServerToken, agentID},
		{"server with the servers' token", testServerToken, Identity{Role: RoleServer, Name: "s2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := joinRequestFor(t, js.addr, tc.token, tc.id)
			start := time.Now()
			got, err := Join(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if got.Cred.Identity() != tc.id {
				t.Errorf("identity %v, want %v", got.Cred.Identity(), tc.id)
			}
			if !bytes.Equal(got.Cred.CAPEM(), js.ca.CertPEM()) {
				t.Error("the credential's CA is not the server's")
			}
			if na := got.Cred.NotAfter(); na.Before(start.Add(2*time.Hour-time.Second)) || na.After(time.Now().Add(2*time.Hour)) {
				t.Errorf("NotAfter %v, want two hours from now (HandlerConfig.Lifetime)", na)
			}
			leaf := got.Cred.cur.Load().leaf
			if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "n1.example" {
				t.Errorf("SANs %v %v, want the hosts asked for", leaf.IPAddresses, leaf.DNSNames)
			}
			if !publicKeysEqual(leaf.PublicKey, req.Key.Public()) {
				t.Error("the certificate is not for the joiner's key")
			}
			switch tc.id.Role {
			case RoleServer:
				if got.CA == nil {
					t.Fatal("a server got no CA")
				}
				if !publicKeysEqual(got.CA.key.Public(), js.ca.key.Public()) {
					t.Error("the CA key a server got is not the CA's")
				}
			case RoleAgent:
				if got.CA != nil {
					t.Error("an agent got the CA")
				}
			}
		})
	}
	if strings.Contains(js.logs.String(), "level=WARN") {
		t.Errorf("joins that succeeded logged a warning:\n%s", js.logs)
	}
}

func TestJoinRefused(t *testing.T) {
	js := startJoinServer(t, HandlerConfig{AgentToken: testAgentToken})
	skewed := startJoinServer(t, HandlerConfig{Now: func() time.Time { return time.Now().Add(10 * time.Minute) }})
	for _, tc := range []struct {
		name   string
		server *joinServer
		token  string
		id     Identity
		ca     []byte
		code   string
		want   string // the whole message, with ADDR for the address
	}{
		{
			name: "wrong token", server: js, token: "skiff-not-this-clusters-token", id: agentID,
			code: "token_refused", want: "join cluster at ADDR: the join token was refused: it is not this cluster's token (check --token)",
		},
		{
			name: "server with the agents' token", server: js, token: testAgentToken, id: serverID,
			code: "role_refused", want: "join cluster at ADDR: the join token was refused: agents' token cannot join a server",
		},
		{
			name: "clock outside the window", server: skewed, token: testServerToken, id: agentID,
			code: "clock_skew", want: "join cluster at ADDR: the join was refused: the joiner's clock is 10m",
		},
		{
			name: "another CA than the one trusted", server: js, token: testServerToken, id: agentID, ca: newTestCA(t, time.Now()).CertPEM(),
			code: "other_ca", want: "join cluster at ADDR: certificate from another CA: this cluster's CA is \"skiff cluster CA ",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := joinRequestFor(t, tc.server.addr, tc.token, tc.id)
			req.CA = tc.ca
			_, err := Join(context.Background(), req)
			var refused *RefusedError
			if !errors.As(err, &refused) {
				t.Fatalf("Join error = %v (%T), want a *RefusedError", err, err)
			}
			if refused.Code != tc.code {
				t.Errorf("code %q, want %q", refused.Code, tc.code)
			}
			if want := strings.ReplaceAll(tc.want, "ADDR", tc.server.addr); !strings.HasPrefix(err.Error(), want) {
				t.Errorf("message\n%s\nwant it to start\n%s", err, want)
			}
			if strings.Contains(err.Error(), tc.token) {
				t.Error("the message shows the token")
			}
		})
	}
	logs := js.logs.String()
	for _, want := range []string{"level=WARN", "remote=127.0.0.1:", "role=agent name=n1", "role=server name=s1", "not this cluster's token", "agents' token cannot join"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the server's log does not say %q:\n%s", want, logs)
		}
	}
	for _, tok := range []string{testServerToken, testAgentToken, "skiff-not-this-clusters-token"} {
		if strings.Contains(logs+skewed.logs.String(), tok) {
			t.Errorf("the server's log shows the token %q", tok)
		}
	}
}

func TestJoinWithTrustedCA(t *testing.T) {
	js := startJoinServer(t, HandlerConfig{})
	req := joinRequestFor(t, js.addr, testServerToken, agentID)
	req.CA = js.ca.CertPEM()
	if _, err := Join(context.Background(), req); err != nil {
		t.Fatalf("re-join with the cluster's own CA: %v", err)
	}
}

func TestJoinWithoutCAIsRetryable(t *testing.T) {
	js := startJoinServer(t, HandlerConfig{CA: func() *CA { return nil }})
	_, err := Join(context.Background(), joinRequestFor(t, js.addr, testServerToken, agentID))
	var refused *RefusedError
	if err == nil || errors.As(err, &refused) || !strings.Contains(err.Error(), "this server has no CA yet; try again") {
		t.Errorf("Join error = %v, want a retryable one saying the server has no CA yet", err)
	}
}

// A man in the middle: a TLS server with a certificate from its own CA,
// answering joins in the server's stead.
func TestJoinRefusesManInTheMiddle(t *testing.T) {
	js := startJoinServer(t, HandlerConfig{})
	mitmCA := newTestCA(t, time.Now())
	mitmCred := newTestCred(t, mitmCA, serverID, []string{"localhost"}, time.Now(), time.Hour)

	// relay passes the request to the real server and answer back: the MAC
	// holds, but the TLS certificate is not from the CA in the answer.
	relay := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		status, answer := postRaw(t, js.addr, body)
		w.WriteHeader(status)
		_, _ = w.Write(answer)
	})
	// substitute relays, then puts its own CA and a certificate from it in
	// the answer: the MAC no longer holds.
	substitute := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req joinRequest
		if err := json.Unmarshal(body, &req); err != nil {
			t.Error(err)
			return
		}
		_, answer := postRaw(t, js.addr, body)
		var resp joinResponse
		if err := json.Unmarshal(answer, &resp); err != nil {
			t.Error(err)
			return
		}
		pub, err := x509.ParsePKIXPublicKey(req.PublicKey)
		if err != nil {
			t.Error(err)
			return
		}
		cert, err := mitmCA.Issue(Identity{Role: req.Role, Name: req.Name, Endpoint: req.Endpoint}, nil, pub, time.Now(), time.Hour)
		if err != nil {
			t.Error(err)
			return
		}
		resp.Cert, resp.CA = string(cert), string(mitmCA.CertPEM())
		_ = json.NewEncoder(w).Encode(resp)
	})
	for _, tc := range []struct {
		name    string
		handler http.Handler
		want    string
	}{
		{"relay", relay, "the server's TLS certificate is not from the CA"},
		{"substitute CA", substitute, "the answer is not signed with the join token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startTLS(t, tc.handler, mitmCred)
			for _, id := range []Identity{agentID, {Role: RoleServer, Name: "s2"}} {
				got, err := Join(context.Background(), joinRequestFor(t, addr, testServerToken, id))
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s: Join = %+v, %v; want an error saying %q", id, got, err, tc.want)
				}
				var refused *RefusedError
				if errors.As(err, &refused) {
					t.Errorf("%s: a man in the middle made a permanent refusal: %v", id, err)
				}
			}
		})
	}
}

// postRaw posts body to a join server, unverified, and returns its answer.
func postRaw(t *testing.T, addr string, body []byte) (int, []byte) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Post("https://"+addr+JoinPath, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Error(err)
		return http.StatusBadGateway, nil
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, answer
}

// signed makes a join request as Join would, signed with token.
func signed(t *testing.T, token string, id Identity, key crypto.Signer, edit func(*joinRequest)) *joinRequest {
	t.Helper()
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	r := &joinRequest{Role: id.Role, Name: id.Name, Endpoint: id.Endpoint, PublicKey: pub, Nonce: make([]byte, joinNonceLen), Time: time.Now().Unix()}
	_, _ = rand.Read(r.Nonce)
	if edit != nil {
		edit(r)
	}
	r.MAC = joinMAC(token, r.macInput())
	return r
}

// serve runs the handler on a request and returns the status and body.
func serve(t *testing.T, h http.Handler, method string, body []byte) (int, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, JoinPath, bytes.NewReader(body)))
	return rec.Code, rec.Body.Bytes()
}

func TestJoinHandlerCAKeyOnlyForServers(t *testing.T) {
	ca := newTestCA(t, time.Now())
	h := NewJoinHandler(HandlerConfig{CA: func() *CA { return ca }, ServerToken: testServerToken, AgentToken: testAgentToken})
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	caKeyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		token string
		id    Identity
	}{
		{"server", testServerToken, serverID},
		{"agent with the servers' token", testServerToken, agentID},
		{"agent with the agents' token", testAgentToken, agentID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := signed(t, tc.token, tc.id, key, nil)
			body, _ := json.Marshal(req)
			status, answer := serve(t, h, http.MethodPost, body)
			if status != http.StatusOK {
				t.Fatalf("status %d: %s", status, answer)
			}
			if bytes.Contains(answer, []byte("PRIVATE KEY")) {
				t.Fatal("the answer has the CA key in the clear")
			}
			var resp joinResponse
			if err := json.Unmarshal(answer, &resp); err != nil {
				t.Fatal(err)
			}
			if tc.id.Role == RoleAgent {
				if resp.CAKey != nil {
					t.Errorf("an agent's answer carries the CA key (%d bytes)", len(resp.CAKey))
				}
				return
			}
			plain, err := open(sealKey(tc.token, req.Nonce), resp.CAKey)
			if err != nil || !bytes.Equal(plain, caKeyPEM) {
				t.Errorf("the CA key does not open with the token and nonce: %v", err)
			}
			otherNonce := bytes.Clone(req.Nonce)
			otherNonce[0] ^= 1
			if _, err := open(sealKey(tc.token, otherNonce), resp.CAKey); err == nil {
				t.Error("the CA key opens with another nonce")
			}
			if _, err := open(sealKey(testAgentToken, req.Nonce), resp.CAKey); err == nil {
				t.Error("the CA key opens with the agents' token")
			}
		})
	}
}

func TestJoinHandlerRefusesBadInput(t *testing.T) {
	ca := newTestCA(t, time.Now())
	h := NewJoinHandler(HandlerConfig{CA: func() *CA { return ca }, ServerToken: testServerToken})
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("a", 254)
	for _, tc := range []struct {
		name   string
		id     Identity
		edit   func(*joinRequest)
		status int
		want   string
	}{
		{"name not RFC 1123", Identity{Role: RoleAgent, Name: "Node_1", Endpoint: "10.0.0.1:7651"}, nil, 400, "name: "},
		{"name too long", Identity{Role: RoleServer, Name: long}, nil, 400, "name: 254 characters"},
		{"unknown role", Identity{Role: "admin", Name: "x"}, nil, 400, "role: "},
		{"agent without endpoint", Identity{Role: RoleAgent, Name: "n1"}, nil, 400, "endpoint: "},
		{"agent endpoint without port", Identity{Role: RoleAgent, Name: "n1", Endpoint: "10.0.0.1"}, nil, 400, "endpoint: "},
		{"server with endpoint", Identity{Role: RoleServer, Name: "s1", Endpoint: "10.0.0.1:1"}, nil, 400, "endpoint: a server has none"},
		{"too many hosts", serverID, func(r *joinRequest) { r.Hosts = make([]string, 33); fill(r.Hosts, "h") }, 400, "hosts: 33"},
		{"host too long", serverID, func(r *joinRequest) { r.Hosts = []string{long} }, 400, "hosts[0]: 254 characters"},
		{"host not a name", serverID, func(r *joinRequest) { r.Hosts = []string{"10.0.0.1", "a b"} }, 400, "hosts[1]: "},
		{"bad public key", serverID, func(r *joinRequest) { r.PublicKey = []byte("junk") }, 400, "publicKey: "},
		{"short nonce", serverID, func(r *joinRequest) { r.Nonce = r.Nonce[:8] }, 400, "nonce: 8 bytes"},
		{"time an hour ago", serverID, func(r *joinRequest) { r.Time -= 3600 }, 403, "clock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, _ := json.Marshal(signed(t, testServerToken, tc.id, key, tc.edit))
			status, answer := serve(t, h, http.MethodPost, body)
			var je joinError
			_ = json.Unmarshal(answer, &je)
			if status != tc.status || !strings.Contains(je.Message, tc.want) {
				t.Errorf("answer %d %+v, want %d saying %q", status, je, tc.status, tc.want)
			}
		})
	}
	t.Run("tampered after signing", func(t *testing.T) {
		req := signed(t, testServerToken, agentID, key, nil)
		req.Endpoint = "10.6.6.6:7651"
		body, _ := json.Marshal(req)
		if status, answer := serve(t, h, http.MethodPost, body); status != http.StatusForbidden || !bytes.Contains(answer, []byte(`"token_refused"`)) {
			t.Errorf("answer %d %s, want 403 token_refused", status, answer)
		}
	})
	t.Run("GET", func(t *testing.T) {
		if status, _ := serve(t, h, http.MethodGet, nil); status != http.StatusMethodNotAllowed {
			t.Errorf("status %d, want 405", status)
		}
	})
	t.Run("body over 64 KiB", func(t *testing.T) {
		body, _ := json.Marshal(signed(t, testServerToken, serverID, key, func(r *joinRequest) { r.Hosts = []string{strings.Repeat("a", 70<<10)} }))
		if status, _ := serve(t, h, http.MethodPost, body); status != http.StatusRequestEntityTooLarge {
			t.Errorf("status %d, want 413", status)
		}
	})
}

func fill(s []string, v string) {
	for i := range s {
		s[i] = v
	}
}
