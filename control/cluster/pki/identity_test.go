package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"strings"
	"testing"
)

func TestIdentityOfRoundTrip(t *testing.T) {
	ca := newTestCA(t, testNow)
	for _, tc := range []struct {
		name   string
		id     Identity
		string string
	}{
		{"server", Identity{Role: RoleServer, Name: "s1"}, "server:s1"},
		{"agent", Identity{Role: RoleAgent, Name: "node-a.example", Endpoint: "10.0.0.7:7651"}, "node:node-a.example"},
		{"agent with a host name endpoint", Identity{Role: RoleAgent, Name: "n2", Endpoint: "n2.lan:7651"}, "node:n2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certPEM, _ := issueTest(t, ca, tc.id, nil, testNow, 0)
			certs, err := parseCertsPEM(certPEM)
			if err != nil {
				t.Fatal(err)
			}
			got, err := IdentityOf(certs[0])
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.id {
				t.Errorf("IdentityOf = %+v, want %+v", got, tc.id)
			}
			if got.String() != tc.string {
				t.Errorf("String() = %q, want %q", got.String(), tc.string)
			}
		})
	}
}

func TestIdentityOfRefuses(t *testing.T) {
	agentURI := []*url.URL{{Scheme: agentScheme, Host: "10.0.0.1:7651"}}
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{"nil", nil, "no certificate"},
		{"no skiff organisation", &x509.Certificate{Subject: pkix.Name{CommonName: "x", Organization: []string{"acme"}}}, "organization"},
		{"no organisation", &x509.Certificate{Subject: pkix.Name{CommonName: "x"}}, "organization"},
		{"two organisations", &x509.Certificate{Subject: pkix.Name{CommonName: "x", Organization: []string{orgServer, orgAgent}}}, "organization"},
		{"no name", &x509.Certificate{Subject: pkix.Name{Organization: []string{orgServer}}}, "no common name"},
		{"agent without endpoint", &x509.Certificate{Subject: pkix.Name{CommonName: "n", Organization: []string{orgAgent}}}, "endpoint"},
		{"agent endpoint without port", &x509.Certificate{Subject: pkix.Name{CommonName: "n", Organization: []string{orgAgent}}, URIs: []*url.URL{{Scheme: agentScheme, Host: "10.0.0.1"}}}, "endpoint"},
		{"agent with two endpoints", &x509.Certificate{Subject: pkix.Name{CommonName: "n", Organization: []string{orgAgent}}, URIs: append(agentURI, agentURI...)}, "more than one"},
		{"server with an endpoint", &x509.Certificate{Subject: pkix.Name{CommonName: "s", Organization: []string{orgServer}}, URIs: agentURI}, "server's certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := IdentityOf(tc.cert)
			if err == nil {
				t.Fatalf("IdentityOf = %+v, want an error", id)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}
