package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/apiserver"
	"skiff.dev/skiff/control/cluster/pki"
)

// front is what the API's listener serves: joins from the start, the API
// once the store is open, and Unavailable before that.
type front struct {
	join http.Handler
	api  atomic.Pointer[http.Handler]
}

var errStarting = errors.New("this server is starting: its store is not open yet; try again")

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == pki.JoinPath {
		f.join.ServeHTTP(w, r)
		return
	}
	if h := f.api.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	_ = connect.NewErrorWriter().Write(w, r, connect.NewError(connect.CodeUnavailable, errStarting))
}

// mutualTLS is the Raft transport's TLS config, used both ways: a server
// presents its certificate and accepts only servers of its cluster.
func mutualTLS(cred *pki.Credential) *tls.Config {
	c := cred.ServerConfig(tls.RequireAndVerifyClientCert, serversOnly) // its VerifyConnection checks the peer both ways
	c.GetClientCertificate = cred.ClientConfig(nil).GetClientCertificate
	c.RootCAs = cred.Pool()
	c.NextProtos = nil
	return c
}

// raftPeer returns the Raft server ID of a connection's peer.
func raftPeer(cred *pki.Credential) func(cs tls.ConnectionState) (string, error) {
	return func(cs tls.ConnectionState) (string, error) {
		id, err := cred.Peer(&cs)
		if err != nil {
			return "", err
		}
		if err := serversOnly(id); err != nil {
			return "", err
		}
		return id.Name, nil
	}
}

// forwardedPeer is the Skiff-Peer header value a forwarded call carries
// for a caller that authenticated with its certificate; "" for others.
func forwardedPeer(r *http.Request) string {
	p, ok := peerPrincipal(r.TLS)
	if !ok {
		return ""
	}
	return apiserver.PeerHeaderValue(p)
}

// agentClients reaches agents for container logs: over mutual TLS, at the
// endpoint of the node's certificate, and only to the agent that owns it.
func agentClients(cred *pki.Credential) func(node, endpoint string) skiffv1connect.AgentServiceClient {
	return func(node, endpoint string) skiffv1connect.AgentServiceClient {
		c := cred.ClientConfig(func(id pki.Identity) error {
			if id.Role != pki.RoleAgent || id.Name != node || id.Endpoint != endpoint {
				return fmt.Errorf("the agent at %s is not node %s's (its certificate names %s)", endpoint, node, id)
			}
			return nil
		})
		p := new(http.Protocols)
		p.SetHTTP1(true)
		p.SetHTTP2(true)
		// No overall timeout: a followed log lives as long as its caller.
		// Unary calls carry their own deadline; the agent answers a
		// stream's headers at once.
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: c, Protocols: p, DisableKeepAlives: true, TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: 30 * time.Second}}
		return skiffv1connect.NewAgentServiceClient(hc, "https://"+endpoint)
	}
}

// agentStreams reaches agents for exec and port-forward WebSockets: as
// agentClients, over HTTP/1.1 (a WebSocket upgrades an HTTP/1.1 request).
func agentStreams(cred *pki.Credential) apiserver.AgentStreams {
	return func(node, endpoint string) (*http.Client, string) {
		c := cred.ClientConfig(func(id pki.Identity) error {
			if id.Role != pki.RoleAgent || id.Name != node || id.Endpoint != endpoint {
				return fmt.Errorf("the agent at %s is not node %s's (its certificate names %s)", endpoint, node, id)
			}
			return nil
		})
		c.NextProtos = []string{"http/1.1"}
		p := new(http.Protocols)
		p.SetHTTP1(true)
		return &http.Client{Transport: &http.Transport{TLSClientConfig: c, Protocols: p, DisableKeepAlives: true, TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: 30 * time.Second}}, "https://" + endpoint
	}
}

// provisionalTLS is what a new server presents until it has its
// certificate: one of a throwaway CA, which no peer trusts. It is enough to
// answer a joiner "no CA yet" (the joiner checks the server's certificate
// only against the CA a successful answer brings).
func provisionalTLS() (*tls.Config, error) {
	ca, err := pki.NewCA(time.Now())
	if err != nil {
		return nil, err
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	certPEM, err := ca.Issue(pki.Identity{Role: pki.RoleServer, Name: "provisional"}, nil, key.Public(), time.Now(), time.Hour)
	if err != nil {
		return nil, err
	}
	cred, err := pki.NewCredential(certPEM, key, ca.CertPEM())
	if err != nil {
		return nil, err
	}
	return cred.ServerConfig(tls.NoClientCert, nil), nil
}
