package main

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// waitAdminConfig waits until the skiff server on dataDir has written the
// admin's client config, which it does once it is ready, and returns it:
// the server's URL, the bootstrap admin's token and the cluster CA.
func waitAdminConfig(t *testing.T, dataDir string, timeout time.Duration) clientConfig {
	t.Helper()
	path := adminConfigPath(dataDir)
	var cfg clientConfig
	var found bool
	var err error
	eventually(t, timeout, func() bool {
		cfg, found, err = loadClientConfig(path)
		return err == nil && found
	}, func() string {
		return fmt.Sprintf("no admin's client config in %s (found %v, err %v)", path, found, err)
	})
	if cfg.Token == "" || cfg.CA == "" || cfg.Server == "" {
		t.Fatalf("the admin's client config %s lacks the server, the token or the CA: %+v", path, cfg)
	}
	return cfg
}

// adminTransport is an HTTP transport as the CLI's (clientConfig.transport):
// it trusts cfg's CA alone and sends cfg's token. close closes its idle
// connections.
func adminTransport(t *testing.T, cfg clientConfig) (rt http.RoundTripper, close func()) {
	t.Helper()
	tc, err := cfg.tlsConfig()
	if err != nil {
		t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if tc != nil {
		tr.TLSClientConfig = tc
		tr.ForceAttemptHTTP2 = true
	}
	return cfg.authorize(tr), tr.CloseIdleConnections
}
