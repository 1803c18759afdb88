package pki

import (
	"crypto"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	serverID = Identity{Role: RoleServer, Name: "s1"}
	agentID  = Identity{Role: RoleAgent, Name: "n1", Endpoint: "127.0.0.1:7651"}
)

func TestNewCredentialRefuses(t *testing.T) {
	ca := newTestCA(t, testNow)
	other := newTestCA(t, testNow)
	certPEM, key := issueTest(t, ca, serverID, nil, testNow, 0)
	otherKey, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		certPEM []byte
		key     crypto.Signer
		caPEM   []byte
		want    string
	}{
		{"another key", certPEM, otherKey, ca.CertPEM(), "does not match"},
		{"another CA", certPEM, key, other.CertPEM(), "not from this cluster's CA"},
		{"no CA", certPEM, key, nil, "CA bundle"},
		{"no key", certPEM, nil, ca.CertPEM(), "no key"},
		{"the CA as leaf", ca.CertPEM(), ca.key, ca.CertPEM(), "organization"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewCredential(tc.certPEM, tc.key, tc.caPEM)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewCredential error = %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestCredentialUpdateRefusesAnotherName(t *testing.T) {
	ca := newTestCA(t, testNow)
	cred := newTestCred(t, ca, serverID, nil, testNow, 0)
	certPEM, key := issueTest(t, ca, Identity{Role: RoleServer, Name: "s2"}, nil, testNow, 0)
	if err := cred.Update(certPEM, key); err == nil || !strings.Contains(err.Error(), "server:s2") {
		t.Errorf("Update to another name: error %v, want one naming server:s2", err)
	}
	if cred.Identity() != serverID {
		t.Errorf("identity after a refused update = %v, want %v", cred.Identity(), serverID)
	}
}

func TestCredentialSaveLoad(t *testing.T) {
	ca := newTestCA(t, testNow)
	dir := filepath.Join(t.TempDir(), "pki")
	if _, found, err := LoadCredential(dir, "agent"); found || err != nil {
		t.Fatalf("LoadCredential of nothing: found %v, err %v; want not found, no error", found, err)
	}
	cred := newTestCred(t, ca, agentID, []string{"127.0.0.1"}, testNow, time.Hour)
	if err := cred.Save(dir, "agent"); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{"agent.crt": 0o644, "agent.key": 0o600, "ca.crt": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s mode %v, want %v", name, fi.Mode(), want)
		}
	}
	got, found, err := LoadCredential(dir, "agent")
	if err != nil || !found {
		t.Fatalf("LoadCredential: found %v, err %v", found, err)
	}
	if got.Identity() != agentID || !got.NotAfter().Equal(cred.NotAfter()) || !got.NotBefore().Equal(cred.NotBefore()) || string(got.CAPEM()) != string(ca.CertPEM()) {
		t.Errorf("loaded %v %v..%v, want %v %v..%v", got.Identity(), got.NotBefore(), got.NotAfter(), agentID, cred.NotBefore(), cred.NotAfter())
	}
	if !publicKeysEqual(got.cur.Load().key.Public(), cred.cur.Load().key.Public()) {
		t.Error("the loaded key is not the saved one")
	}

	for _, tc := range []struct {
		name   string
		remove string
		want   string
	}{
		{"no key", "agent.key", "agent.key does not"},
		{"no certificate", "agent.crt", "agent.crt does not"},
		{"no CA", "ca.crt", "ca.crt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := cred.Save(dir, "agent"); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(dir, tc.remove)); err != nil {
				t.Fatal(err)
			}
			_, found, err := LoadCredential(dir, "agent")
			if !found || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadCredential: found %v, err %v; want found and an error saying %q", found, err, tc.want)
			}
		})
	}
}

// handshake runs a TLS handshake over TCP on 127.0.0.1 and has the server
// write a byte the client reads, so a client certificate the server
// refuses shows on the client too (TLS 1.3 verifies it after the client's
// handshake returns). It returns each side's connection state and error.
func handshake(t *testing.T, server, client *tls.Config) (ss, cs tls.ConnectionState, serr, cerr error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		state tls.ConnectionState
		err   error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		_, err = tc.Write([]byte{1})
		done <- result{state: tc.ConnectionState(), err: err}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err == nil {
		cs = c.ConnectionState()
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	r := <-done
	return r.state, cs, r.err, err
}

func TestTLSConfigs(t *testing.T) {
	ca := newTestCA(t, time.Now())
	other := newTestCA(t, time.Now())
	srv := newTestCred(t, ca, serverID, []string{"127.0.0.1"}, time.Now(), time.Hour)
	agent := newTestCred(t, ca, agentID, nil, time.Now(), time.Hour)
	stranger := newTestCred(t, other, agentID, nil, time.Now(), time.Hour)
	errNo := errors.New("not you")
	refuse := func(Identity) error { return errNo }
	onlyServers := func(id Identity) error {
		if id.Role != RoleServer {
			return errNo
		}
		return nil
	}
	for _, tc := range []struct {
		name      string
		server    *tls.Config
		client    *tls.Config
		serverErr string // "" for none
		clientErr string
		peerOfSrv Identity // what PeerIdentity says on the server
		peerKnown bool
	}{
		{
			name:      "agent to server, client certificate required",
			server:    srv.ServerConfig(tls.RequireAndVerifyClientCert, nil),
			client:    agent.ClientConfig(onlyServers),
			peerOfSrv: agentID, peerKnown: true,
		},
		{
			name:      "client certificate from another CA",
			server:    srv.ServerConfig(tls.VerifyClientCertIfGiven, nil),
			client:    stranger.ClientConfig(nil),
			serverErr: "certificate", clientErr: "certificate",
		},
		{
			name:      "server's allow refuses the client",
			server:    srv.ServerConfig(tls.RequireAndVerifyClientCert, refuse),
			client:    agent.ClientConfig(nil),
			serverErr: "refuse node:n1: not you", clientErr: "error",
		},
		{
			name:      "client's allow refuses the server",
			server:    srv.ServerConfig(tls.RequireAndVerifyClientCert, nil),
			client:    agent.ClientConfig(refuse),
			serverErr: "error", clientErr: "refuse server:s1: not you",
		},
		{
			name:      "client does not trust the server's CA",
			server:    srv.ServerConfig(tls.RequireAndVerifyClientCert, nil),
			client:    stranger.ClientConfig(nil),
			serverErr: "error", clientErr: "verify server certificate",
		},
		{
			name:   "no client certificate, verified if given",
			server: srv.ServerConfig(tls.VerifyClientCertIfGiven, nil),
			client: &tls.Config{InsecureSkipVerify: true},
		},
		{
			name:      "no client certificate, required",
			server:    srv.ServerConfig(tls.RequireAndVerifyClientCert, nil),
			client:    &tls.Config{InsecureSkipVerify: true},
			serverErr: "certificate", clientErr: "certificate",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ss, cs, serr, cerr := handshake(t, tc.server, tc.client)
			check := func(side string, err error, want string) {
				t.Helper()
				switch {
				case want == "" && err != nil:
					t.Errorf("%s: %v, want no error", side, err)
				case want != "" && err == nil:
					t.Errorf("%s: no error, want one saying %q", side, want)
				case want != "" && !strings.Contains(err.Error(), want):
					t.Errorf("%s: %v, want one saying %q", side, err, want)
				}
			}
			check("server", serr, tc.serverErr)
			check("client", cerr, tc.clientErr)
			if tc.serverErr != "" || tc.clientErr != "" {
				return
			}
			id, ok := PeerIdentity(&ss)
			if ok != tc.peerKnown || id != tc.peerOfSrv {
				t.Errorf("PeerIdentity on the server = %v, %v; want %v, %v", id, ok, tc.peerOfSrv, tc.peerKnown)
			}
			if cs.Version != tls.VersionTLS13 {
				t.Errorf("TLS version %x, want 1.3", cs.Version)
			}
		})
	}
	if _, ok := PeerIdentity(nil); ok {
		t.Error("PeerIdentity(nil) is known")
	}
}

func TestUpdateTakesEffectOnNextHandshake(t *testing.T) {
	ca := newTestCA(t, time.Now())
	srv := newTestCred(t, ca, serverID, nil, time.Now(), time.Hour)
	agent := newTestCred(t, ca, agentID, nil, time.Now(), time.Hour)
	server := srv.ServerConfig(tls.RequireAndVerifyClientCert, nil)
	client := agent.ClientConfig(nil)

	serial := func() string {
		t.Helper()
		ss, cs, serr, cerr := handshake(t, server, client)
		if serr != nil || cerr != nil {
			t.Fatalf("handshake: server %v, client %v", serr, cerr)
		}
		if len(ss.PeerCertificates) == 0 {
			t.Fatal("no client certificate")
		}
		return cs.PeerCertificates[0].SerialNumber.String() + "/" + ss.PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	for _, c := range []*Credential{srv, agent} {
		certPEM, key := issueTest(t, ca, c.Identity(), nil, time.Now(), 2*time.Hour)
		if err := c.Update(certPEM, key); err != nil {
			t.Fatal(err)
		}
	}
	after := serial()
	if before == after {
		t.Fatalf("server/client serials %s before and after Update: the old certificates are still presented", after)
	}
	if want := srv.cur.Load().leaf.SerialNumber.String() + "/" + agent.cur.Load().leaf.SerialNumber.String(); after != want {
		t.Errorf("presented serials %s, want the updated %s", after, want)
	}
	if got, want := srv.NotAfter(), srv.NotBefore().Add(2*time.Hour+time.Minute); !got.Equal(want) {
		t.Errorf("NotAfter after Update = %v, want %v", got, want)
	}
}
