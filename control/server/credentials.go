package server

import (
	"context"
	"crypto"
	"crypto/tls"
	"encoding/base32"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"skiff.dev/skiff/control/apiserver"
	"skiff.dev/skiff/control/cluster"
	"skiff.dev/skiff/control/cluster/pki"
)

// A server's secrets live under DataDir/server: the join token in token,
// the CA and the server's certificate and key in tls/. The CA's key is kept
// on the servers' disks only, never in the store: a snapshot (which an
// admin may download) would carry it, and every agent holds the join token
// it would be encrypted with. A server that joins receives it in the join
// answer, encrypted with its token.
func tokenPath(dataDir string) string { return filepath.Join(dataDir, "server", "token") }
func tlsDir(dataDir string) string    { return filepath.Join(dataDir, "server", "tls") }

// credName is the server's certificate's file name in tlsDir.
const credName = "server"

// resolveToken returns the server's join token: the configured one, else
// the one kept from an earlier start, else (a cluster of its own starting
// for the first time) a new one. fresh says the token is not on disk yet:
// the caller saves it once the server has joined (saveToken), so that a
// refused join leaves nothing behind.
func resolveToken(cfg Config) (token string, fresh bool, err error) {
	kept, err := os.ReadFile(tokenPath(cfg.DataDir))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		kept = nil
	case err != nil:
		return "", false, fmt.Errorf("read the join token: %w", err)
	}
	keptToken := strings.TrimSpace(string(kept))
	switch {
	case cfg.Token != "" && keptToken != "" && cfg.Token != keptToken:
		return "", false, fmt.Errorf("join token: differs from the one this server started with (kept in %s); a server keeps its cluster's token", tokenPath(cfg.DataDir))
	case cfg.Token != "":
		if err := pki.CheckToken(cfg.Token); err != nil {
			return "", false, fmt.Errorf("join token: %w", err)
		}
		return cfg.Token, keptToken == "", nil
	case keptToken != "":
		return keptToken, false, nil
	case cfg.several():
		return "", false, errors.New("join token: required value: the servers of a cluster of several share one (--token or --token-file)")
	}
	return pki.NewToken(), true, nil
}

// saveToken keeps the join token in the data directory, readable by root
// alone (an admin reads it there to start agents, as with k3s).
func saveToken(dataDir, token string) error {
	if err := os.MkdirAll(filepath.Dir(tokenPath(dataDir)), 0o700); err != nil {
		return fmt.Errorf("save the join token: %w", err)
	}
	if err := os.WriteFile(tokenPath(dataDir), []byte(token+"\n"), 0o600); err != nil {
		return fmt.Errorf("save the join token: %w", err)
	}
	return nil
}

// bootstrapToken is the bearer token of the cluster's first admin. Every
// server derives the same one from the join token, so each can write the
// admin's client config; whoever holds the join token can join as a
// server anyway, so it gives nothing away.
func bootstrapToken(joinToken string) string {
	enc := base32.StdEncoding.WithPadding(base32.NoPadding)
	id := enc.EncodeToString(pki.Derive(joinToken, "skiff bootstrap admin token id v1", 10))[:12]
	secret := enc.EncodeToString(pki.Derive(joinToken, "skiff bootstrap admin token v1", 20))
	return strings.ToLower(id + "." + secret)
}

// identity is what the server's TLS credentials are.
type identity struct {
	ca   *pki.CA
	cred *pki.Credential
}

// hosts are the names and addresses the server's certificate is valid for:
// its API, Raft and gossip hosts (all of the machine's addresses when one
// listens on all), localhost, the host name, and the extra SANs asked for.
func (s *Server) hosts() []string {
	seen := map[string]bool{}
	var out []string
	add := func(h string) {
		if h != "" && !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	add("localhost")
	add("127.0.0.1")
	add("::1")
	if name, err := os.Hostname(); err == nil {
		add(name)
	}
	for _, a := range []string{s.cfg.Listen, s.cfg.RaftListen, s.cfg.RaftAdvertise, s.cfg.Gossip} {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			addrs, _ := net.InterfaceAddrs()
			for _, ia := range addrs {
				if n, ok := ia.(*net.IPNet); ok {
					add(n.IP.String())
				}
			}
			continue
		}
		add(host)
	}
	for _, h := range s.cfg.SANs {
		add(h)
	}
	return out
}

// loadIdentity returns the credentials kept in the data directory, if any.
func (s *Server) loadIdentity(id string) (*identity, bool, error) {
	dir := tlsDir(s.cfg.DataDir)
	ca, caFound, err := pki.LoadCA(dir)
	if err != nil {
		return nil, false, err
	}
	cred, credFound, err := pki.LoadCredential(dir, credName)
	if err != nil {
		return nil, false, err
	}
	if !caFound || !credFound {
		if caFound != credFound {
			return nil, false, fmt.Errorf("server credentials in %s: the CA and the server's certificate must both be there; remove the directory to join again", dir)
		}
		return nil, false, nil
	}
	if got := cred.Identity(); got.Role != pki.RoleServer || got.Name != id {
		return nil, false, fmt.Errorf("server credentials in %s are %s's, not server %s's", dir, got, id)
	}
	return &identity{ca: ca, cred: cred}, true, nil
}

// newCA creates the cluster's CA and this server's certificate: the first
// server of a cluster does, at its bootstrap.
func (s *Server) newCA(id string) (*identity, error) {
	ca, err := pki.NewCA(time.Now())
	if err != nil {
		return nil, fmt.Errorf("create the cluster CA: %w", err)
	}
	certPEM, key, err := s.issue(ca, id)
	if err != nil {
		return nil, err
	}
	cred, err := pki.NewCredential(certPEM, key, ca.CertPEM())
	if err != nil {
		return nil, err
	}
	s.log.Info("created the cluster CA", "server", id)
	return &identity{ca: ca, cred: cred}, nil
}

// issue signs a new certificate for this server with ca.
func (s *Server) issue(ca *pki.CA, id string) ([]byte, crypto.Signer, error) {
	key, err := pki.NewKey()
	if err != nil {
		return nil, nil, err
	}
	certPEM, err := ca.Issue(pki.Identity{Role: pki.RoleServer, Name: id}, s.hosts(), key.Public(), time.Now(), s.cfg.CertLifetime)
	if err != nil {
		return nil, nil, fmt.Errorf("issue the server's certificate: %w", err)
	}
	return certPEM, key, nil
}

// save keeps the credentials in the data directory.
func (s *Server) save(ident *identity) error {
	dir := tlsDir(s.cfg.DataDir)
	if err := ident.ca.Save(dir); err != nil {
		return err
	}
	return ident.cred.Save(dir, credName)
}

// joinIdentity gets this new server its credentials from the servers of
// the pool: from any that has the CA. With bootstrap-expect, when the
// expected number of new servers have met and none has a CA, the one with
// the lowest ID creates it and the others join it. It tries again every
// second until ctx ends; a refused token is an error at once.
func (s *Server) joinIdentity(ctx context.Context, pool *cluster.Pool, id, token string) (*identity, error) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastErr error
	for {
		servers := pool.Servers()
		sort.Slice(servers, func(i, j int) bool { return servers[i].Name < servers[j].Name })
		fresh := 0
		for _, m := range servers {
			if m.Cluster == "" {
				fresh++
			}
			if m.Name == id || m.API == "" {
				continue
			}
			key, err := pki.NewKey()
			if err != nil {
				return nil, err
			}
			j, err := pki.Join(ctx, pki.JoinRequest{
				Server: m.API, Token: token, Identity: pki.Identity{Role: pki.RoleServer, Name: id},
				Hosts: s.hosts(), Key: key, Timeout: 5 * time.Second,
			})
			var refused *pki.RefusedError
			switch {
			case err == nil:
				s.log.Info("joined the cluster's CA", "via", m.Name)
				return &identity{ca: j.CA, cred: j.Cred}, nil
			case errors.As(err, &refused):
				return nil, fmt.Errorf("this server (data directory %s) cannot join: %w", s.cfg.DataDir, err)
			}
			lastErr = err
		}
		if s.cfg.BootstrapExpect >= 2 && fresh >= s.cfg.BootstrapExpect && len(servers) > 0 && servers[0].Name == id && servers[0].Cluster == "" {
			return s.newCA(id) // the founder
		}
		if lastErr != nil {
			s.log.Debug("get a certificate from the cluster; trying again", "err", lastErr)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			if lastErr == nil {
				lastErr = ctx.Err()
			}
			return nil, fmt.Errorf("get a certificate from the cluster's servers: %w", lastErr)
		}
	}
}

// peerPrincipal maps a verified client certificate to the API's principal:
// servers and agents authenticate with their certificates.
func peerPrincipal(cs *tls.ConnectionState) (apiserver.Principal, bool) {
	id, ok := pki.PeerIdentity(cs)
	if !ok {
		return apiserver.Principal{}, false
	}
	switch id.Role {
	case pki.RoleServer:
		return apiserver.Principal{Name: id.String(), Server: true}, true
	case pki.RoleAgent:
		return apiserver.Principal{Name: id.String(), Node: id.Name, Endpoint: id.Endpoint}, true
	}
	return apiserver.Principal{}, false
}

// serversOnly admits the cluster's servers alone.
func serversOnly(id pki.Identity) error {
	if id.Role != pki.RoleServer {
		return fmt.Errorf("%s is not a server of this cluster", id)
	}
	return nil
}
