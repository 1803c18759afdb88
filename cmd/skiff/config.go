package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// clientConfig is how the CLI reaches a cluster: the server's address, the
// bearer token, and the cluster CA that signs the server's certificate.
// skiff server and skiff dev write one with the bootstrap admin token at
// their first start (see writeClientConfig).
type clientConfig struct {
	Server string `json:"server"`
	Token  string `json:"token,omitempty"`
	// CA is the cluster CA's certificate (PEM); empty for skiff dev, which
	// serves plain HTTP on loopback.
	CA string `json:"ca,omitempty"`
}

// configEnv names the client config file; ~/.skiff/config when unset.
const configEnv = "SKIFF_CONFIG"

// defaultConfigPath is $SKIFF_CONFIG, else ~/.skiff/config.
func defaultConfigPath() string {
	if p := os.Getenv(configEnv); p != "" {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".skiff", "config")
}

// loadClientConfig reads a client config; a missing file is no error
// (found is false).
func loadClientConfig(path string) (cfg clientConfig, found bool, err error) {
	if path == "" {
		return cfg, false, nil
	}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, false, nil
	}
	if err != nil {
		return cfg, false, fmt.Errorf("read client config: %w", err)
	}
	if err := yaml.UnmarshalStrict(raw, &cfg); err != nil {
		return cfg, false, fmt.Errorf("client config %s: %w", path, err)
	}
	return cfg, true, nil
}

// save writes the config to path, readable by its owner alone (it holds a
// token), through a temporary file so that a reader never sees half of it.
func (c clientConfig) save(path string) error {
	raw, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write client config: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config-*")
	if err != nil {
		return fmt.Errorf("write client config: %w", err)
	}
	defer os.Remove(tmp.Name())
	header := "# skiff client config: the server, a bearer token and the cluster CA.\n"
	if _, err := tmp.Write(append([]byte(header), raw...)); err != nil {
		tmp.Close()
		return fmt.Errorf("write client config: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write client config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write client config: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write client config: %w", err)
	}
	return nil
}

// baseURL is the server's URL: its scheme as given, else https when a CA is
// configured and http when none is (skiff dev).
func (c clientConfig) baseURL() string {
	if strings.Contains(c.Server, "://") {
		return c.Server
	}
	if c.CA != "" {
		return "https://" + c.Server
	}
	return "http://" + c.Server
}

// transport is an HTTP transport that trusts the config's CA (only it,
// when one is set) and sends its token on every request.
func (c clientConfig) transport() (http.RoundTripper, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tc, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	if tc != nil {
		tr.TLSClientConfig = tc
		tr.ForceAttemptHTTP2 = true
	}
	return c.authorize(tr), nil
}

// tlsConfig trusts the config's CA alone; nil when it has none.
func (c clientConfig) tlsConfig() (*tls.Config, error) {
	if c.CA == "" {
		return nil, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.CA)) {
		return nil, errors.New("client config: ca: no PEM certificate in it")
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}, nil
}

// authorize sends the config's token, if any, with every request of next.
func (c clientConfig) authorize(next http.RoundTripper) http.RoundTripper {
	if c.Token == "" {
		return next
	}
	return bearer{token: c.Token, next: next}
}

// bearer adds a bearer token to each request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// CloseIdleConnections closes the idle connections of the transport it
// wraps, so that a client built on it can be closed like any other.
func (b bearer) CloseIdleConnections() {
	if c, ok := b.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
