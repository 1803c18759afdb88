package store

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// identityFile names, in a store directory, who the store is: its server
// ID, kept from the first start so that Raft knows the server again after
// a restart, and the ID of the cluster the directory belongs to.
const identityFile = "identity.json"

// identity is what identityFile holds.
type identity struct {
	ServerID  string `json:"serverID"`
	ClusterID string `json:"clusterID"`
}

// newID returns prefix and 12 random hex digits.
func newID(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// loadIdentity reads dir's identity; found is false when it has none.
func loadIdentity(dir string) (id identity, found bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, identityFile))
	if errors.Is(err, os.ErrNotExist) {
		return identity{}, false, nil
	}
	if err != nil {
		return identity{}, false, err
	}
	if err := json.Unmarshal(b, &id); err != nil || id.ServerID == "" {
		return identity{}, false, fmt.Errorf("%s is damaged (%v): it must name the server", filepath.Join(dir, identityFile), err)
	}
	return id, true, nil
}

// saveIdentity writes dir's identity durably.
func saveIdentity(dir string, id identity) error {
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, identityFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	f, err := os.Open(tmp)
	if err == nil {
		err = errors.Join(f.Sync(), f.Close())
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

// resolveIdentity settles who the store in cfg.Dir is, before Raft starts:
// the identity the directory keeps, checked against what cfg asks for, or,
// for a directory without one, a new identity (a directory that already
// holds Raft state from before identities were kept is the default server
// of a cluster of its own).
func resolveIdentity(cfg Config) (identity, error) {
	id, found, err := loadIdentity(cfg.Dir)
	if err != nil {
		return identity{}, err
	}
	if found {
		if cfg.ServerID != "" && cfg.ServerID != id.ServerID {
			return identity{}, fmt.Errorf("the data directory %s belongs to server %q, not %q: give each server its own directory", cfg.Dir, id.ServerID, cfg.ServerID)
		}
		if cfg.ClusterID != "" && id.ClusterID != "" && cfg.ClusterID != id.ClusterID {
			return identity{}, fmt.Errorf("the data directory %s belongs to cluster %s, not %s: it cannot join another cluster; give it an empty directory", cfg.Dir, id.ClusterID, cfg.ClusterID)
		}
		return id, nil
	}
	id = identity{ServerID: cfg.ServerID, ClusterID: cfg.ClusterID}
	_, statErr := os.Stat(filepath.Join(cfg.Dir, "raft.db"))
	legacy := statErr == nil
	if id.ServerID == "" {
		id.ServerID = newID("server-")
		if legacy {
			id.ServerID = defaultServerID // what the directory's Raft log knows it as
		}
	}
	if id.ClusterID == "" && (!cfg.Cluster || legacy) {
		// A server of several learns its cluster when it bootstraps or
		// is added (Store.Bootstrap, Store.AdoptCluster).
		id.ClusterID = newID("cluster-")
	}
	return id, saveIdentity(cfg.Dir, id)
}

// ReadIdentity returns the server and cluster IDs that the store directory
// dir keeps; found is false for a directory that keeps none yet (a new
// server). The cluster ID is empty for a server of several that has not
// joined its cluster yet.
func ReadIdentity(dir string) (serverID, clusterID string, found bool, err error) {
	id, found, err := loadIdentity(dir)
	return id.ServerID, id.ClusterID, found, err
}

// NewServerID returns a new random server ID, for Config.ServerID.
func NewServerID() string { return newID("server-") }

// setClusterID records the cluster the directory belongs to, once: it
// fails when the directory already belongs to another.
func (s *Store) setClusterID(c string) error {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	switch s.id.ClusterID {
	case c:
		return nil
	case "":
	default:
		return fmt.Errorf("the data directory %s belongs to cluster %s, not %s: it cannot join another cluster; give it an empty directory", s.dir, s.id.ClusterID, c)
	}
	id := s.id
	id.ClusterID = c
	if err := saveIdentity(s.dir, id); err != nil {
		return err
	}
	// ClusterID alone: ServerID is read without the lock (ServerID).
	s.id.ClusterID = c
	return nil
}
