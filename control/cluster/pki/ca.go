package pki

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultLifetime is how long a server's or agent's certificate is valid.
const DefaultLifetime = 365 * 24 * time.Hour

// caLifetime is how long a new CA is valid.
const caLifetime = 10 * 365 * 24 * time.Hour

// backdate is how long before now a certificate starts to be valid, so a
// peer whose clock is a little behind accepts it.
const backdate = time.Minute

// The file names of a CA in its directory.
const (
	caCertFile = "ca.crt"
	caKeyFile  = "ca.key"
)

// CA is the cluster's certificate authority: an ECDSA P-256 key and its
// self-signed certificate. It is immutable and safe for concurrent use.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
	pool    *x509.CertPool
}

// NewCA makes a new CA, valid for ten years from now. Its common name is
// "skiff cluster CA" and a short random suffix, so that two clusters' CAs
// can be told apart in a message.
func NewCA(now time.Time) (*CA, error) {
	key, err := NewKey()
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "skiff cluster CA " + hex.EncodeToString(suffix)},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true, // it signs leaves only
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	ca, err := ParseCA(certPEM(der), nil)
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	ca.key = key
	return ca, nil
}

// ParseCA reads a CA from its certificate and key PEM. A nil keyPEM reads
// the certificate alone (unexported use: NewCA).
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := parseCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("parse CA certificate: %d certificates, want one", len(certs))
	}
	cert := certs[0]
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("parse CA certificate: %q is not a CA certificate", cert.Subject.CommonName)
	}
	if cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("parse CA certificate: %q may not sign certificates (no cert sign key usage)", cert.Subject.CommonName)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	ca := &CA{cert: cert, certPEM: bytes.Clone(certPEM), pool: pool}
	if keyPEM == nil {
		return ca, nil
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("parse CA key: %w", err)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("parse CA: the key does not match the certificate %q", cert.Subject.CommonName)
	}
	ca.key = key
	return ca, nil
}

// LoadCA reads dir/ca.crt and dir/ca.key. found is false when neither
// exists; only one of them, or a pair that does not match, is an error.
func LoadCA(dir string) (ca *CA, found bool, err error) {
	files, found, err := readFiles(filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile))
	if err != nil {
		return nil, found, fmt.Errorf("load CA: %w", err)
	}
	if !found {
		return nil, false, nil
	}
	ca, err = ParseCA(files[0], files[1])
	if err != nil {
		return nil, true, fmt.Errorf("load CA from %s: %w", dir, err)
	}
	return ca, true, nil
}

// Save writes dir/ca.key (mode 0600) and dir/ca.crt (0644), each
// atomically, creating dir (0700) if needed.
func (ca *CA) Save(dir string) error {
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, caKeyFile), keyPEM, 0o600); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, caCertFile), ca.certPEM, 0o644); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	return nil
}

// CertPEM returns the CA's certificate as PEM.
func (ca *CA) CertPEM() []byte { return bytes.Clone(ca.certPEM) }

// KeyPEM returns the CA's private key as PKCS #8 PEM.
func (ca *CA) KeyPEM() ([]byte, error) {
	if ca.key == nil {
		return nil, errors.New("the CA has no key")
	}
	return marshalKeyPEM(ca.key)
}

// Pool returns a pool holding the CA's certificate.
func (ca *CA) Pool() *x509.CertPool { return ca.pool.Clone() }

// name is how messages tell this CA from another.
func (ca *CA) name() string { return caName(ca.cert) }

func caName(c *x509.Certificate) string {
	return fmt.Sprintf("%q (expires %s)", c.Subject.CommonName, c.NotAfter.UTC().Format(time.DateOnly))
}

// Issue signs a certificate for id with public key pub, valid from a
// minute before now for lifetime (DefaultLifetime when 0), but not past
// the CA's own expiry. hosts become its SANs: an IP SAN for each that
// parses as an IP address, else a DNS SAN (empty ones skipped). An agent's
// certificate also has the URI SAN skiff-agent://Endpoint. Every skiff
// component is both a TLS server and client, so the certificate is for
// both. It returns the certificate PEM.
func (ca *CA) Issue(id Identity, hosts []string, pub crypto.PublicKey, now time.Time, lifetime time.Duration) ([]byte, error) {
	if err := id.validate(); err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	if ca.key == nil {
		return nil, fmt.Errorf("issue certificate for %s: the CA has no key", id)
	}
	if pub == nil {
		return nil, fmt.Errorf("issue certificate for %s: no public key", id)
	}
	if lifetime < 0 {
		return nil, fmt.Errorf("issue certificate for %s: negative lifetime %s", id, lifetime)
	}
	if lifetime == 0 {
		lifetime = DefaultLifetime
	}
	if !now.Before(ca.cert.NotAfter) {
		return nil, fmt.Errorf("issue certificate for %s: the CA %s has expired", id, ca.name())
	}
	notAfter := now.Add(lifetime)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", id, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: id.Name, Organization: []string{org(id.Role)}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	seen := map[string]bool{}
	for _, h := range hosts {
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if id.Role == RoleAgent {
		tmpl.URIs = []*url.URL{{Scheme: agentScheme, Host: id.Endpoint}}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", id, err)
	}
	return certPEM(der), nil
}

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	for {
		n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
		if err != nil {
			return nil, fmt.Errorf("make serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}
