package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// restoredTerm is the Raft term of the snapshot RestoreSnapshot writes. The
// restored server's first election starts term 1 (it has no term of its
// own yet), so its entries never carry a term below the snapshot's.
const restoredTerm = 1

// RestoreSnapshot seeds dir, a store directory (Config.Dir) that does not
// exist yet or is empty, with the snapshot file at path, as a new
// one-server cluster: `etcdctl snapshot restore`. It is offline: no store
// may be running on dir. It returns the snapshot's description.
//
// The file is checked before anything is written: its header (magic,
// version), its size and its SHA-256. Its body is then copied into a
// staging directory beside dir, where it must prove to be a state database
// at the header's revision whose records all decode, and the staging
// directory becomes dir by a rename. Refused, it leaves dir and its
// parents holding what they held.
//
// The store it lays out, opened by Open with the default ServerID, has
// every object with its CreateRevision and ModRevision, and continues the
// revisions after the snapshot's: revisions are Raft indexes, so dir gets
// state.db (the database, its watch history cleared and marked compacted
// at the snapshot's revision: a watch can resume from there, not from
// before) and a Raft snapshot at Index = revision whose configuration is
// this one server, and no Raft log. Open finds that state (no bootstrap),
// raft takes the configuration and indexes from the snapshot, and the
// server elects itself and appends from revision+1.
func RestoreSnapshot(path, dir string) (SnapshotInfo, error) {
	info, err := restoreSnapshot(path, dir)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("restore snapshot %s into %s: %w", path, dir, err)
	}
	return info, nil
}

func restoreSnapshot(path, dir string) (SnapshotInfo, error) {
	if err := checkRestoreTarget(dir); err != nil {
		return SnapshotInfo{}, err
	}
	// A first pass checks the file before anything is written.
	info, err := copySnapshotBody(path, io.Discard)
	if err != nil {
		return SnapshotInfo{}, err
	}

	parent := filepath.Dir(dir)
	made, err := mkdirParents(parent)
	if err != nil {
		return SnapshotInfo{}, err
	}
	stage, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".restore-*")
	if err != nil {
		removeMade(made)
		return SnapshotInfo{}, err
	}
	err = layOut(path, stage, info)
	if err == nil {
		// A new cluster, whose one server the Raft snapshot names.
		err = saveIdentity(stage, identity{ServerID: defaultServerID, ClusterID: newID("cluster-")})
	}
	if err != nil {
		os.RemoveAll(stage)
		removeMade(made)
		return SnapshotInfo{}, err
	}
	// rename(2) replaces an empty directory and refuses one that is not,
	// so a store that appeared meanwhile is not overwritten.
	if err := os.Rename(stage, dir); err != nil {
		os.RemoveAll(stage)
		removeMade(made)
		return SnapshotInfo{}, fmt.Errorf("put the restored store in place: %w", err)
	}
	if err := syncDir(parent); err != nil {
		return SnapshotInfo{}, err
	}
	return info, nil
}

// checkRestoreTarget refuses a store directory that holds anything.
func checkRestoreTarget(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case len(entries) == 0:
		return nil
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	for _, n := range names {
		if n == "state.db" || n == "raft.db" || n == "snapshots" {
			return fmt.Errorf("%s already holds a store (%s): restore into a new data directory", dir, strings.Join(names, ", "))
		}
	}
	return fmt.Errorf("%s is not empty (%s): restore into a new data directory", dir, strings.Join(names, ", "))
}

// layOut writes the store directory stage from the snapshot file at path,
// whose first pass described it as want.
func layOut(path, stage string, want SnapshotInfo) error {
	dbPath := filepath.Join(stage, "state.db")
	fh, err := os.OpenFile(dbPath, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	info, err := copySnapshotBody(path, fh)
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if info != want {
		return errors.New("the file changed while it was being restored")
	}

	db, err := bbolt.Open(dbPath, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("the body is not a bbolt database: %w", err)
	}
	defer db.Close()
	if err := db.View(func(tx *bbolt.Tx) error { return checkRestoredDB(tx, want.Revision) }); err != nil {
		return fmt.Errorf("the body is not a skiff state database at revision %d: %w", want.Revision, err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error { return startHistoryAt(tx, want.Revision) }); err != nil {
		return fmt.Errorf("reset the watch history: %w", err)
	}
	if err := writeRaftSnapshot(stage, db, want.Revision); err != nil {
		return fmt.Errorf("write the raft snapshot: %w", err)
	}
	return syncDir(stage)
}

// checkRestoredDB checks tx is a state database at rev: bbolt's own
// consistency check, skiff's buckets, the applied index, and every
// object's record, with revisions no later than rev.
func checkRestoredDB(tx *bbolt.Tx, rev uint64) error {
	var bad error
	for err := range tx.Check() { // drained: Check's goroutine sends them all
		if bad == nil {
			bad = fmt.Errorf("bbolt consistency check: %w", err)
		}
	}
	if bad != nil {
		return bad
	}
	for _, name := range [][]byte{bucketKV, bucketEvents, bucketMeta} {
		if tx.Bucket(name) == nil {
			return fmt.Errorf("bucket %q is missing", name)
		}
	}
	if applied := getUint64(tx.Bucket(bucketMeta).Get(keyApplied)); applied != rev {
		return fmt.Errorf("the database is at revision %d", applied)
	}
	return tx.Bucket(bucketKV).ForEach(func(k, v []byte) error {
		kv, err := unmarshalKVRecord(string(k), v)
		if err != nil {
			return err
		}
		if kv.CreateRevision == 0 || kv.CreateRevision > kv.ModRevision || kv.ModRevision > rev {
			return fmt.Errorf("%s has createRevision %d and modRevision %d", k, kv.CreateRevision, kv.ModRevision)
		}
		return nil
	})
}

// startHistoryAt empties the watch history and marks it compacted at rev:
// the restored store's history starts at the snapshot, and a watch from
// an older revision is told to list again.
func startHistoryAt(tx *bbolt.Tx, rev uint64) error {
	if err := tx.DeleteBucket(bucketEvents); err != nil {
		return err
	}
	if _, err := tx.CreateBucket(bucketEvents); err != nil {
		return err
	}
	meta := tx.Bucket(bucketMeta)
	if err := meta.Put(keyCompacted, putUint64(rev)); err != nil {
		return err
	}
	return meta.Put(keyEventCount, putUint64(0))
}

// writeRaftSnapshot writes, in the store directory dir, the Raft snapshot
// raft starts from: at Index rev, with db's state (in the format of
// fsm.Snapshot) and a configuration of one voter, the server Open runs by
// default. Its address is only a placeholder: a single server never dials
// itself, and raft learns its real address from its transport.
func writeRaftSnapshot(dir string, db *bbolt.DB, rev uint64) error {
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, snapshotsRetained, newRaftLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return err
	}
	conf := raft.Configuration{Servers: []raft.Server{{
		Suffrage: raft.Voter,
		ID:       defaultServerID,
		Address:  defaultBindAddr,
	}}}
	sink, err := snaps.Create(raft.SnapshotVersionMax, rev, restoredTerm, conf, rev, peerEncoder{})
	if err != nil {
		return err
	}
	tx, err := db.Begin(false)
	if err != nil {
		sink.Cancel()
		return err
	}
	defer tx.Rollback()
	return (&fsmSnapshot{tx: tx, applied: rev}).Persist(sink)
}

// peerEncoder encodes peers for the file snapshot store's legacy peer list
// as raft's TCP transport does (the address itself); it is the only part of
// a transport that writing a snapshot uses.
type peerEncoder struct{ raft.Transport }

func (peerEncoder) EncodePeer(_ raft.ServerID, addr raft.ServerAddress) []byte {
	return []byte(addr)
}

// mkdirParents creates dir and its missing parents, and returns the
// topmost one it created ("" if dir existed), for removeMade.
func mkdirParents(dir string) (string, error) {
	top := ""
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		top = d
		if filepath.Dir(d) == d {
			break
		}
	}
	if top == "" {
		return "", nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	return top, nil
}

func removeMade(top string) {
	if top != "" {
		os.RemoveAll(top)
	}
}
