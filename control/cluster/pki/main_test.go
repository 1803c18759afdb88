package pki

import (
	"crypto"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the run if a goroutine outlives the tests: Renew stops
// when its context ends, and Join closes its connections.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testNow is the tests' clock reading, far from the wall clock's so a test
// that reads time.Now by mistake shows.
var testNow = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

func newTestCA(t *testing.T, now time.Time) *CA {
	t.Helper()
	ca, err := NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// newTestCred issues a credential for id from ca, valid from now for lifetime.
func newTestCred(t *testing.T, ca *CA, id Identity, hosts []string, now time.Time, lifetime time.Duration) *Credential {
	t.Helper()
	certPEM, key := issueTest(t, ca, id, hosts, now, lifetime)
	c, err := NewCredential(certPEM, key, ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func issueTest(t *testing.T, ca *CA, id Identity, hosts []string, now time.Time, lifetime time.Duration) ([]byte, crypto.Signer) {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.Issue(id, hosts, key.Public(), now, lifetime)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, key
}
