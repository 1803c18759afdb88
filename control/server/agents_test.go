package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/cluster/pki"
)

// agentStub answers ContainerLogs with NotFound: reaching it is the point.
type agentStub struct {
	skiffv1connect.UnimplementedAgentServiceHandler
}

func (agentStub) ContainerLogs(context.Context, *connect.Request[skiffv1.ContainerLogsRequest]) (*connect.Response[skiffv1.ContainerLogsResponse], error) {
	return nil, connect.NewError(connect.CodeNotFound, errors.New("reached"))
}

// TestAgentClientsReachTheirAgentAlone: the server reaches a node's agent
// only where the agent's certificate says it is, and only that agent: an
// endpoint that another agent (or anyone else) answers is refused during
// the handshake.
func TestAgentClientsReachTheirAgentAlone(t *testing.T) {
	ca, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cred := func(id pki.Identity) *pki.Credential {
		key, err := pki.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		certPEM, err := ca.Issue(id, []string{"127.0.0.1"}, key.Public(), time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, err := pki.NewCredential(certPEM, key, ca.CertPEM())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// Two agents, each serving on its own listener with its own certificate.
	agent := func(name string) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c := cred(pki.Identity{Role: pki.RoleAgent, Name: name, Endpoint: ln.Addr().String()})
		mux := http.NewServeMux()
		mux.Handle(skiffv1connect.NewAgentServiceHandler(agentStub{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			_ = srv.Serve(tls.NewListener(ln, c.ServerConfig(tls.RequireAndVerifyClientCert, serversOnly)))
		}()
		t.Cleanup(func() { _ = srv.Close() })
		return ln.Addr().String()
	}
	a, b := agent("node-a"), agent("node-b")
	clients := agentClients(cred(pki.Identity{Role: pki.RoleServer, Name: "s1"}))
	call := func(node, endpoint string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := clients(node, endpoint).ContainerLogs(ctx, connect.NewRequest(&skiffv1.ContainerLogsRequest{}))
		return err
	}
	if err := call("node-a", a); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("node-a at its own endpoint: %v, want the agent's NotFound", err)
	}
	for _, tt := range []struct{ name, node, endpoint string }{
		{"node-a's name, node-b's address", "node-a", b},
		{"node-b's name, node-a's address", "node-b", a},
	} {
		err := call(tt.node, tt.endpoint)
		if err == nil || connect.CodeOf(err) == connect.CodeNotFound || !strings.Contains(err.Error(), "is not node "+tt.node+"'s") {
			t.Errorf("%s: %v, want the handshake refused", tt.name, err)
		}
	}
}
