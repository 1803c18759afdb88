package main

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"time"

	"skiff.dev/skiff/control/server"
)

// runServer runs s and, once it is up, writes the admin's client config.
func runServer(ctx context.Context, log *slog.Logger, s *server.Server, dataDir, path string) error {
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Ready():
		writeAdminConfig(log, s, dataDir, path)
	case err := <-done:
		return err
	}
	return <-done
}

// adminConfigPath is where a server keeps its admin's client config.
func adminConfigPath(dataDir string) string {
	return filepath.Join(dataDir, "server", "admin.config")
}

// writeAdminConfig writes the bootstrap admin's client config into the
// server's data directory and at path (the default client config when
// empty), unless the file there is another server's: then it says where
// the admin's config is instead. A config for this very address is
// replaced, as a cluster started again from an empty directory has new
// credentials.
func writeAdminConfig(log *slog.Logger, s *server.Server, dataDir, path string) {
	a := s.Admin()
	cfg := clientConfig{Server: a.Server, Token: a.Token, CA: string(a.CA)}
	own := adminConfigPath(dataDir)
	if err := cfg.save(own); err != nil {
		log.Warn("write the admin's client config", "path", own, "err", err)
	}
	if path == "" {
		path = defaultConfigPath()
	}
	if path == "" {
		return
	}
	old, found, err := loadClientConfig(path)
	if err == nil && (!found || sameServer(old.Server, cfg.Server) || deadLoopback(old.Server)) {
		if err := cfg.save(path); err != nil {
			log.Warn("write the admin's client config", "path", path, "err", err)
			return
		}
		log.Info("wrote the admin's client config", "path", path)
		return
	}
	log.Info("the client config is another server's: left as it is; the admin's is in the data directory", "config", path, "admin", own)
}

// deadLoopback says whether a server address is on loopback and nothing
// listens there: a config left by a server of this machine that is gone.
func deadLoopback(server string) bool {
	host := server
	if _, rest, ok := strings.Cut(host, "://"); ok {
		host = strings.TrimSuffix(rest, "/")
	}
	h, _, err := net.SplitHostPort(host)
	if ip := net.ParseIP(h); err != nil || (h != "localhost" && (ip == nil || !ip.IsLoopback())) {
		return false
	}
	c, err := net.DialTimeout("tcp", host, 200*time.Millisecond)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

// sameServer says whether two server addresses (URLs or host:port) name
// the same host and port.
func sameServer(a, b string) bool {
	strip := func(s string) string {
		if _, rest, ok := strings.Cut(s, "://"); ok {
			s = rest
		}
		return strings.TrimSuffix(s, "/")
	}
	return strip(a) == strip(b)
}
