package pki

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// Credential is one component's certificate and key, with the CA bundle
// that verifies its peers. It is safe for concurrent use: Update swaps in a
// renewed certificate, which the next TLS handshake of every configuration
// made by ServerConfig or ClientConfig presents.
type Credential struct {
	caPEM []byte
	pool  *x509.CertPool
	cur   atomic.Pointer[pair]
}

// pair is a certificate with its key; never changed once stored.
type pair struct {
	tls     tls.Certificate
	leaf    *x509.Certificate
	id      Identity
	certPEM []byte
	key     crypto.Signer
}

// NewCredential checks that certPEM (a leaf, then any intermediates)
// matches key, carries a skiff identity and chains to a CA of caPEM, and
// returns the credential. The chain is checked at a time within the leaf's
// validity, so an expired credential still loads: callers look at NotAfter.
func NewCredential(certPEM []byte, key crypto.Signer, caPEM []byte) (*Credential, error) {
	cas, err := parseCertsPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("create credential: CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	c := &Credential{caPEM: bytes.Clone(caPEM), pool: pool}
	p, err := c.newPair(certPEM, key)
	if err != nil {
		return nil, fmt.Errorf("create credential: %w", err)
	}
	c.cur.Store(p)
	return c, nil
}

// newPair checks a certificate and key against the credential's CA.
func (c *Credential) newPair(certPEM []byte, key crypto.Signer) (*pair, error) {
	if key == nil {
		return nil, errors.New("no key")
	}
	certs, err := parseCertsPEM(certPEM)
	if err != nil {
		return nil, err
	}
	leaf := certs[0]
	id, err := IdentityOf(leaf)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(key.Public(), leaf.PublicKey) {
		return nil, fmt.Errorf("the key does not match the certificate of %s", id)
	}
	inter := x509.NewCertPool()
	for _, ic := range certs[1:] {
		inter.AddCert(ic)
	}
	mid := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         c.pool,
		Intermediates: inter,
		CurrentTime:   mid,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("the certificate of %s is not from this cluster's CA: %w", id, err)
	}
	chain := make([][]byte, len(certs))
	for i, ce := range certs {
		chain[i] = ce.Raw
	}
	return &pair{
		tls:     tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf},
		leaf:    leaf,
		id:      id,
		certPEM: bytes.Clone(certPEM),
		key:     key,
	}, nil
}

// The file names of a credential in its directory: name.crt, name.key and
// the CA bundle ca.crt, which a server shares with its CA's files.
func credFiles(dir, name string) (cert, key, ca string) {
	return filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"), filepath.Join(dir, caCertFile)
}

// LoadCredential reads dir/name.crt, dir/name.key and dir/ca.crt. found is
// false when neither name.crt nor name.key exists; any other missing file,
// or files that do not fit together, is an error.
func LoadCredential(dir, name string) (c *Credential, found bool, err error) {
	certFile, keyFile, caFile := credFiles(dir, name)
	files, found, err := readFiles(certFile, keyFile)
	if err != nil {
		return nil, found, fmt.Errorf("load credential %s: %w", name, err)
	}
	if !found {
		return nil, false, nil
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, true, fmt.Errorf("load credential %s: %w", name, err)
	}
	key, err := parseKeyPEM(files[1])
	if err != nil {
		return nil, true, fmt.Errorf("load credential %s: %s: %w", name, keyFile, err)
	}
	c, err = NewCredential(files[0], key, caPEM)
	if err != nil {
		return nil, true, fmt.Errorf("load credential %s from %s: %w", name, dir, err)
	}
	return c, true, nil
}

// Save writes dir/name.key (mode 0600), dir/name.crt and dir/ca.crt
// (0644), each atomically, creating dir (0700) if needed.
func (c *Credential) Save(dir, name string) error {
	p := c.cur.Load()
	keyPEM, err := marshalKeyPEM(p.key)
	if err != nil {
		return fmt.Errorf("save credential %s: %w", name, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save credential %s: %w", name, err)
	}
	certFile, keyFile, caFile := credFiles(dir, name)
	for _, f := range []struct {
		path string
		data []byte
		perm os.FileMode
	}{
		{caFile, c.caPEM, 0o644},
		{keyFile, keyPEM, 0o600},
		{certFile, p.certPEM, 0o644},
	} {
		if err := writeFileAtomic(f.path, f.data, f.perm); err != nil {
			return fmt.Errorf("save credential %s: %w", name, err)
		}
	}
	return nil
}

// Identity is who the current certificate names.
func (c *Credential) Identity() Identity { return c.cur.Load().id }

// NotAfter is when the current certificate expires.
func (c *Credential) NotAfter() time.Time { return c.cur.Load().leaf.NotAfter }

// NotBefore is when the current certificate became valid.
func (c *Credential) NotBefore() time.Time { return c.cur.Load().leaf.NotBefore }

// CAPEM returns the CA bundle as PEM.
func (c *Credential) CAPEM() []byte { return bytes.Clone(c.caPEM) }

// Pool returns a pool holding the CA bundle.
func (c *Credential) Pool() *x509.CertPool { return c.pool.Clone() }

// Update replaces the certificate and key after the same checks as
// NewCredential; the certificate must name the same role and name. The
// next handshake presents it.
func (c *Credential) Update(certPEM []byte, key crypto.Signer) error {
	p, err := c.newPair(certPEM, key)
	if err != nil {
		return fmt.Errorf("update credential of %s: %w", c.Identity(), err)
	}
	old := c.Identity()
	if p.id.Role != old.Role || p.id.Name != old.Name {
		return fmt.Errorf("update credential of %s: the new certificate is for %s", old, p.id)
	}
	c.cur.Store(p)
	return nil
}

// certificate is the current certificate for a handshake.
func (c *Credential) certificate() *tls.Certificate { return &c.cur.Load().tls }

// ServerConfig returns a TLS configuration for a listener. It presents the
// current certificate; clientAuth is tls.RequireAndVerifyClientCert or
// tls.VerifyClientCertIfGiven. A client certificate must chain to the CA
// and carry a skiff identity, and when allow is not nil allow(identity)
// must return nil, else the handshake fails with that error. Leave its
// Certificates empty: crypto/tls presents Certificates[0] rather than the
// current certificate to a client that sends no server name.
func (c *Credential) ServerConfig(clientAuth tls.ClientAuthType, allow func(Identity) error) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2", "http/1.1"},
		ClientAuth: clientAuth,
		ClientCAs:  c.Pool(),
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.certificate(), nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil // no client certificate, and clientAuth allows that
			}
			return checkPeer(cs.PeerCertificates[0], allow)
		},
	}
}

// ClientConfig returns a TLS configuration for skiff's own components
// dialing each other. It presents the current certificate and verifies
// that the server's certificate chains to the CA and carries a skiff
// identity, and, when allow is not nil, that allow(identity) returns nil.
// It does not check the host name: internal peers are checked by
// identity. (It verifies in VerifyConnection with InsecureSkipVerify set,
// the way crypto/tls documents for custom verification; so on the dialing
// side the connection state has no VerifiedChains.)
func (c *Credential) ClientConfig(allow func(Identity) error) *tls.Config {
	pool := c.Pool()
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return c.certificate(), nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the server sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, ic := range cs.PeerCertificates[1:] {
				inter.AddCert(ic)
			}
			leaf := cs.PeerCertificates[0]
			if _, err := leaf.Verify(x509.VerifyOptions{
				Roots:         pool,
				Intermediates: inter,
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}); err != nil {
				return fmt.Errorf("verify server certificate: %w", err)
			}
			return checkPeer(leaf, allow)
		},
	}
}

// checkPeer reads a verified peer certificate's identity and asks allow.
func checkPeer(leaf *x509.Certificate, allow func(Identity) error) error {
	id, err := IdentityOf(leaf)
	if err != nil {
		return fmt.Errorf("check peer: %w", err)
	}
	if allow == nil {
		return nil
	}
	if err := allow(id); err != nil {
		return fmt.Errorf("refuse %s: %w", id, err)
	}
	return nil
}

// PeerIdentity returns the identity of the peer certificate the TLS
// handshake verified: the first verified chain's leaf. It is false for a
// nil state or one without verified chains (no client certificate, or the
// dialing side of ClientConfig, whose allow callback sees the identity).
func PeerIdentity(cs *tls.ConnectionState) (Identity, bool) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Identity{}, false
	}
	id, err := IdentityOf(cs.VerifiedChains[0][0])
	if err != nil {
		return Identity{}, false
	}
	return id, true
}

// CertPEM is the current certificate (PEM).
func (c *Credential) CertPEM() []byte { return bytes.Clone(c.cur.Load().certPEM) }

// Key is the current certificate's key.
func (c *Credential) Key() crypto.Signer { return c.cur.Load().key }

// Peer returns the identity of a connection's peer certificate, verified
// against the credential's CA: the verified chain's leaf when crypto/tls
// verified one, else the peer's certificate verified here (the dialing
// side of ClientConfig, and listeners that verify in VerifyConnection).
func (c *Credential) Peer(cs *tls.ConnectionState) (Identity, error) {
	if id, ok := PeerIdentity(cs); ok {
		return id, nil
	}
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return Identity{}, errors.New("the peer sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, ic := range cs.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	leaf := cs.PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: c.pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return Identity{}, fmt.Errorf("verify peer certificate: %w", err)
	}
	return IdentityOf(leaf)
}
