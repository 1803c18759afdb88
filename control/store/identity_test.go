package store

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestIdentity: a new directory gets a server ID and a cluster ID of its
// own and keeps them across restarts; a directory is refused to another
// server or another cluster; a directory from before identities were kept
// is the default server.
func TestIdentity(t *testing.T) {
	open := func(cfg Config) (*Store, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return Open(ctx, cfg)
	}
	dir := t.TempDir()
	s, err := open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	server, cluster := s.ServerID(), s.ClusterID()
	if !strings.HasPrefix(server, "server-") || !strings.HasPrefix(cluster, "cluster-") {
		t.Errorf("new identity: server %q cluster %q", server, cluster)
	}
	mustCreate(t, s, "/k", "v")
	s.Close()

	s, err = open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if s.ServerID() != server || s.ClusterID() != cluster {
		t.Errorf("after a restart: server %q cluster %q, want %q %q", s.ServerID(), s.ClusterID(), server, cluster)
	}
	if _, err := s.Get(context.Background(), "/k"); err != nil {
		t.Errorf("data after a restart: %v", err)
	}
	s.Close()

	before := snapshotTree(t, dir)
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{Dir: dir, ServerID: "someone-else"}, `belongs to server "` + server + `", not "someone-else"`},
		{Config{Dir: dir, ClusterID: "cluster-other"}, "belongs to cluster " + cluster + ", not cluster-other: it cannot join another cluster"},
	} {
		if s, err := open(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			if err == nil {
				s.Close()
			}
			t.Errorf("Open(%+v): %v, want an error with %q", tt.cfg, err, tt.want)
		}
	}
	if after := snapshotTree(t, dir); after != before {
		t.Errorf("a refused open changed the directory:\n%s\nwas\n%s", after, before)
	}

	// A directory from before identities were kept: Raft state of the
	// default server, no identity file. It opens as that server.
	legacy := t.TempDir()
	s, err = open(Config{Dir: legacy, ServerID: defaultServerID})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, "/old", "v")
	s.Close()
	if err := os.Remove(filepath.Join(legacy, identityFile)); err != nil {
		t.Fatal(err)
	}
	s, err = open(Config{Dir: legacy})
	if err != nil {
		t.Fatalf("a directory from before identities: %v", err)
	}
	if s.ServerID() != defaultServerID {
		t.Errorf("a directory from before identities opens as %q, want %q", s.ServerID(), defaultServerID)
	}
	if _, err := s.Get(context.Background(), "/old"); err != nil {
		t.Errorf("its data: %v", err)
	}
	s.Close()
	if id, found, err := loadIdentity(legacy); err != nil || !found || id.ServerID != defaultServerID {
		t.Errorf("its identity is now kept: %+v %v %v", id, found, err)
	}

	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, identityFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := open(Config{Dir: bad}); err == nil || !strings.Contains(err.Error(), "identity.json is damaged") {
		if err == nil {
			s.Close()
		}
		t.Errorf("damaged identity: %v", err)
	}
}

// snapshotTree lists the names and sizes under dir.
func snapshotTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil {
			b.WriteString(strings.TrimPrefix(p, dir) + " " + info.Mode().String() + "\n")
		}
		return nil
	})
	return b.String()
}
