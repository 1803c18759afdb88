package pki

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNewCA(t *testing.T) {
	ca := newTestCA(t, testNow)
	other := newTestCA(t, testNow)
	c := ca.cert
	if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("IsCA %v, key usage %v: not a CA", c.IsCA, c.KeyUsage)
	}
	if !strings.HasPrefix(c.Subject.CommonName, "skiff cluster CA ") || c.Subject.CommonName == other.cert.Subject.CommonName {
		t.Errorf("common names %q and %q: want \"skiff cluster CA\" and a random suffix", c.Subject.CommonName, other.cert.Subject.CommonName)
	}
	if got, want := c.NotAfter, testNow.Add(10*365*24*time.Hour); !got.Equal(want) {
		t.Errorf("NotAfter = %v, want %v", got, want)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
}

func TestIssue(t *testing.T) {
	ca := newTestCA(t, testNow)
	caEnd := ca.cert.NotAfter
	for _, tc := range []struct {
		name     string
		id       Identity
		hosts    []string
		now      time.Time
		lifetime time.Duration
		dns      []string
		ips      []string
		uris     []string
		notAfter time.Time
	}{
		{
			name: "server with hosts", id: Identity{Role: RoleServer, Name: "s1"},
			hosts: []string{"10.0.0.1", "", "s1.example", "::1", "localhost", "s1.example"}, now: testNow,
			dns: []string{"s1.example", "localhost"}, ips: []string{"10.0.0.1", "::1"},
			notAfter: testNow.Add(DefaultLifetime),
		},
		{
			name: "agent", id: Identity{Role: RoleAgent, Name: "n1", Endpoint: "10.0.0.9:7651"},
			hosts: []string{"10.0.0.9"}, now: testNow, lifetime: time.Hour,
			ips: []string{"10.0.0.9"}, uris: []string{"skiff-agent://10.0.0.9:7651"},
			notAfter: testNow.Add(time.Hour),
		},
		{
			name: "capped at the CA's expiry", id: Identity{Role: RoleServer, Name: "s2"},
			now: caEnd.Add(-24 * time.Hour), lifetime: DefaultLifetime,
			notAfter: caEnd,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certPEM, key := issueTest(t, ca, tc.id, tc.hosts, tc.now, tc.lifetime)
			certs, err := parseCertsPEM(certPEM)
			if err != nil {
				t.Fatal(err)
			}
			c := certs[0]
			if !slices.Equal(c.DNSNames, tc.dns) {
				t.Errorf("DNS SANs %q, want %q", c.DNSNames, tc.dns)
			}
			var ips []string
			for _, ip := range c.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tc.ips) {
				t.Errorf("IP SANs %q, want %q", ips, tc.ips)
			}
			var uris []string
			for _, u := range c.URIs {
				uris = append(uris, u.String())
			}
			if !slices.Equal(uris, tc.uris) {
				t.Errorf("URI SANs %q, want %q", uris, tc.uris)
			}
			if !c.NotBefore.Equal(tc.now.Add(-time.Minute)) {
				t.Errorf("NotBefore = %v, want a minute before %v", c.NotBefore, tc.now)
			}
			if !c.NotAfter.Equal(tc.notAfter) {
				t.Errorf("NotAfter = %v, want %v", c.NotAfter, tc.notAfter)
			}
			if !publicKeysEqual(c.PublicKey, key.Public()) {
				t.Error("the certificate is not for the key")
			}
			if c.SerialNumber.BitLen() < 64 {
				t.Errorf("serial %v: not random 128-bit", c.SerialNumber)
			}
			if c.IsCA || c.KeyUsage != x509.KeyUsageDigitalSignature ||
				!slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
				t.Errorf("IsCA %v, key usage %v, ext key usage %v", c.IsCA, c.KeyUsage, c.ExtKeyUsage)
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: tc.now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("does not verify against the CA: %v", err)
			}
		})
	}
}

func TestIssueRefuses(t *testing.T) {
	ca := newTestCA(t, testNow)
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	certOnly, err := ParseCA(ca.CertPEM(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		ca       *CA
		id       Identity
		now      time.Time
		lifetime time.Duration
		want     string
	}{
		{"unknown role", ca, Identity{Role: "admin", Name: "x"}, testNow, 0, "unknown role"},
		{"empty role", ca, Identity{Name: "x"}, testNow, 0, "unknown role"},
		{"empty name", ca, Identity{Role: RoleServer}, testNow, 0, "no name"},
		{"agent without endpoint", ca, Identity{Role: RoleAgent, Name: "n"}, testNow, 0, "endpoint"},
		{"agent endpoint without port", ca, Identity{Role: RoleAgent, Name: "n", Endpoint: "10.0.0.1"}, testNow, 0, "endpoint"},
		{"server with endpoint", ca, Identity{Role: RoleServer, Name: "s", Endpoint: "10.0.0.1:1"}, testNow, 0, "only agents"},
		{"negative lifetime", ca, Identity{Role: RoleServer, Name: "s"}, testNow, -time.Hour, "negative lifetime"},
		{"expired CA", ca, Identity{Role: RoleServer, Name: "s"}, ca.cert.NotAfter, 0, "has expired"},
		{"CA without key", certOnly, Identity{Role: RoleServer, Name: "s"}, testNow, 0, "has no key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.ca.Issue(tc.id, nil, key.Public(), tc.now, tc.lifetime)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Issue error = %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestParseCARefuses(t *testing.T) {
	ca := newTestCA(t, testNow)
	other := newTestCA(t, testNow)
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := other.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	leafPEM, _ := issueTest(t, ca, Identity{Role: RoleServer, Name: "s"}, nil, testNow, 0)
	for _, tc := range []struct {
		name          string
		certPEM, keyP []byte
		want          string
	}{
		{"no certificate", []byte("junk"), keyPEM, "no CERTIFICATE PEM block"},
		{"no key", ca.CertPEM(), []byte("junk"), "no PRIVATE KEY PEM block"},
		{"another CA's key", ca.CertPEM(), otherKey, "does not match"},
		{"a leaf", leafPEM, keyPEM, "not a CA certificate"},
		{"two certificates", append(ca.CertPEM(), other.CertPEM()...), keyPEM, "2 certificates"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCA(tc.certPEM, tc.keyP)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseCA error = %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestCASaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if _, found, err := LoadCA(dir); found || err != nil {
		t.Fatalf("LoadCA of a missing directory: found %v, err %v; want not found, no error", found, err)
	}
	ca := newTestCA(t, testNow)
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{"": 0o700 | os.ModeDir, "ca.crt": 0o644, "ca.key": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s mode %v, want %v", filepath.Join(dir, name), fi.Mode(), want)
		}
	}
	got, found, err := LoadCA(dir)
	if err != nil || !found {
		t.Fatalf("LoadCA: found %v, err %v", found, err)
	}
	if !got.cert.Equal(ca.cert) || !publicKeysEqual(got.key.Public(), ca.key.Public()) {
		t.Error("the loaded CA is not the saved one")
	}
	// It still signs.
	if _, err := got.Issue(Identity{Role: RoleServer, Name: "s"}, nil, ca.key.Public(), testNow, 0); err != nil {
		t.Errorf("the loaded CA cannot issue: %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("directory holds %d files, want ca.crt and ca.key only (no temporary files)", len(entries))
	}
}

func TestLoadCARefusesPartial(t *testing.T) {
	ca := newTestCA(t, testNow)
	other := newTestCA(t, testNow)
	for _, tc := range []struct {
		name   string
		remove string
		swap   bool
		want   string
	}{
		{"certificate only", "ca.key", false, "ca.key does not"},
		{"key only", "ca.crt", false, "ca.crt does not"},
		{"mismatched pair", "", true, "does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := ca.Save(dir); err != nil {
				t.Fatal(err)
			}
			if tc.remove != "" {
				if err := os.Remove(filepath.Join(dir, tc.remove)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.swap {
				if err := os.WriteFile(filepath.Join(dir, "ca.crt"), other.CertPEM(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, found, err := LoadCA(dir)
			if !found || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadCA: found %v, error %v; want found and an error saying %q", found, err, tc.want)
			}
		})
	}
}
