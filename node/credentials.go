package node

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"skiff.dev/skiff/control/cluster"
	"skiff.dev/skiff/control/cluster/pki"
)

// The node's certificate, its key and the cluster CA live under
// DataDir/node/tls.
func tlsDir(dataDir string) string { return filepath.Join(dataDir, "node", "tls") }

const credName = "agent"

// serverHost is a server address without its scheme.
func serverHost(server string) string {
	if _, rest, ok := strings.Cut(server, "://"); ok {
		return strings.TrimSuffix(rest, "/")
	}
	return server
}

// serversOnly admits the cluster's servers alone.
func serversOnly(id pki.Identity) error {
	if id.Role != pki.RoleServer {
		return fmt.Errorf("%s is not a server of this cluster", id)
	}
	return nil
}

// credential returns the node's certificate: the one kept from an earlier
// run while it names this node and endpoint and is not due for renewal,
// else a new one from the cluster (trading the join token for it). A
// refused token is an error at once; a server that cannot be reached is
// tried again, as registration is.
func (n *Node) credential(ctx context.Context, pool *cluster.Pool, endpoint string) (*pki.Credential, error) {
	dir := tlsDir(n.cfg.DataDir)
	cred, found, err := pki.LoadCredential(dir, credName)
	if err != nil {
		return nil, err
	}
	var caPEM []byte
	if found {
		id := cred.Identity()
		renewAt := cred.NotBefore().Add(cred.NotAfter().Sub(cred.NotBefore()) * 2 / 3)
		if id.Role == pki.RoleAgent && id.Name == n.cfg.Name && id.Endpoint == endpoint && time.Now().Before(renewAt) {
			return cred, nil
		}
		caPEM = cred.CAPEM()
	}
	wait := 100 * time.Millisecond
	for {
		c, err := n.join(ctx, pool, endpoint, caPEM)
		if err == nil {
			if err := c.Save(dir, credName); err != nil {
				return nil, err
			}
			return c, nil
		}
		var refused *pki.RefusedError
		if errors.As(err, &refused) || ctx.Err() != nil {
			return nil, err
		}
		n.log.Warn("get the node's certificate; will retry", "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// join trades the join token for a new certificate of this node at
// endpoint: at the configured server, or at the live servers of the pool
// in turn. caPEM, when set, is the CA the node already trusts: an answer
// from another is refused.
func (n *Node) join(ctx context.Context, pool *cluster.Pool, endpoint string, caPEM []byte) (*pki.Credential, error) {
	servers := []string{serverHost(n.cfg.Server)}
	if pool != nil {
		servers = servers[:0]
		for _, m := range pool.Servers() {
			if m.API != "" {
				servers = append(servers, m.API)
			}
		}
		if len(servers) == 0 {
			return nil, fmt.Errorf("get the node's certificate: %w", errNoServer)
		}
	}
	host, _, _ := net.SplitHostPort(endpoint) // the listener's own address: always host:port
	var errs []error
	for _, srv := range servers {
		key, err := pki.NewKey()
		if err != nil {
			return nil, err
		}
		j, err := pki.Join(ctx, pki.JoinRequest{
			Server: srv, Token: n.cfg.Token, Key: key, CA: caPEM, Hosts: []string{host},
			Identity: pki.Identity{Role: pki.RoleAgent, Name: n.cfg.Name, Endpoint: endpoint},
		})
		var refused *pki.RefusedError
		if err == nil || errors.As(err, &refused) {
			if err != nil {
				return nil, err
			}
			return j.Cred, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// renew is the node's certificate renewal: a new one from the cluster,
// kept on disk.
func (n *Node) renew(pool *cluster.Pool, endpoint string, cred *pki.Credential) func(ctx context.Context) ([]byte, crypto.Signer, error) {
	return func(ctx context.Context) ([]byte, crypto.Signer, error) {
		c, err := n.join(ctx, pool, endpoint, cred.CAPEM())
		if err != nil {
			return nil, nil, err
		}
		if err := c.Save(tlsDir(n.cfg.DataDir), credName); err != nil {
			return nil, nil, err
		}
		return c.CertPEM(), c.Key(), nil
	}
}
