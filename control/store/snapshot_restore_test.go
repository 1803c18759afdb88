package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// TestSnapshotRestore saves a store with created, updated and deleted
// objects, restores the snapshot into a new directory and opens it: every
// object is there with its value and revisions, the history starts at the
// snapshot, new writes get revisions above it, and all of that survives a
// restart.
func TestSnapshotSaveRestore(t *testing.T) {
	ctx := testCtx(t)
	s := openTest(t, "", nil)
	for i := range 10 {
		mustCreate(t, s, fmt.Sprintf("/pods/default/p%d", i), fmt.Sprint(i))
	}
	mustCreate(t, s, "/namespaces/default", "ns")
	if _, err := s.Update(ctx, "/pods/default/p2", []byte("updated"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, "/pods/default/p5", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Txn(ctx, Txn{Ops: []Op{CreateOp("/pods/default/t1", []byte("t")), DeleteOp("/pods/default/p7", 0)}}); err != nil {
		t.Fatal(err)
	}
	want, wantRev, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "snap")
	info := saveSnapshot(t, s, path)
	if info.Revision != wantRev {
		t.Errorf("snapshot at rv %d, the store is at %d", info.Revision, wantRev)
	}
	mustCreate(t, s, "/pods/default/after", "not in the snapshot")

	dir := filepath.Join(t.TempDir(), "data", "server") // parents created too
	got, err := RestoreSnapshot(path, dir)
	if err != nil {
		t.Fatal(err)
	}
	if got != info {
		t.Errorf("RestoreSnapshot says %+v, the save said %+v", got, info)
	}

	r := openTest(t, dir, nil)
	check := func(r *Store, extra ...KV) {
		t.Helper()
		kvs, _, err := r.List(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		w := append(slices.Clone(want), extra...)
		slices.SortFunc(w, func(a, b KV) int { return strings.Compare(a.Key, b.Key) })
		if !slices.EqualFunc(kvs, w, kvEqual) {
			t.Errorf("restored store:\n got %+v\nwant %+v", kvs, w)
		}
	}
	check(r)
	if rev := r.Revision(); rev != info.Revision {
		t.Errorf("restored store at rv %d, want %d", rev, info.Revision)
	}
	if _, err := r.Watch(ctx, "", info.Revision-1); !errors.Is(err, ErrExpired) {
		t.Errorf("watch from before the snapshot: %v, want ErrExpired", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := r.Watch(wctx, "/pods/", info.Revision)
	if err != nil {
		t.Fatalf("watch from the snapshot's revision: %v", err)
	}
	kv := mustCreate(t, r, "/pods/default/new", "n")
	if kv.ModRevision <= info.Revision {
		t.Errorf("a new write got rv %d, not above the snapshot's %d", kv.ModRevision, info.Revision)
	}
	if evs := collect(t, ch, 1); evs[0].KV.Key != "/pods/default/new" || evs[0].Revision != kv.ModRevision {
		t.Errorf("watch from the snapshot: %v", describe(evs))
	}

	// A restart keeps it all and carries on.
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r2 := openTest(t, dir, nil)
	check(r2, kv)
	if kv2 := mustCreate(t, r2, "/pods/default/newer", "n"); kv2.ModRevision <= kv.ModRevision {
		t.Errorf("after a restart a write got rv %d, not above %d", kv2.ModRevision, kv.ModRevision)
	}
}

// TestRestoreSnapshotRefuses: a file that is not a good snapshot, or a
// directory that is not empty, is refused with an error naming the problem,
// and the directory and its parents are left as they were.
func TestRestoreSnapshotRefuses(t *testing.T) {
	s := openTest(t, "", nil)
	mustCreate(t, s, "/pods/default/a", "a")
	good := filepath.Join(t.TempDir(), "snap")
	info := saveSnapshot(t, s, good)
	goodBytes, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	body := goodBytes[snapshotHeaderSize:]

	edit := func(f func(b []byte) []byte) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			if err := os.WriteFile(path, f(bytes.Clone(goodBytes)), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	// foreignDB is a bbolt database without skiff's buckets.
	foreignDB := func(t *testing.T, path string) {
		dbPath := filepath.Join(t.TempDir(), "other.db")
		db, err := bbolt.Open(dbPath, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("x")); return err }); err != nil {
			t.Fatal(err)
		}
		db.Close()
		b, err := os.ReadFile(dbPath)
		if err != nil {
			t.Fatal(err)
		}
		writeSnapshotFile(t, path, 3, b)
	}
	// A file whose hash holds but whose body is not a state database is
	// found out in a staging directory beside the store directory, then
	// removed: the directories' contents are as they were, their times
	// are not. Everything else is refused before anything is written.
	tests := []struct {
		name   string
		file   func(t *testing.T, path string)
		setup  func(t *testing.T, dir string) // the store directory
		want   string
		staged bool
	}{
		{"a flipped byte in the body", edit(func(b []byte) []byte { b[len(b)/2] ^= 0x40; return b }), nil,
			"damaged: the body's sha256 is", false},
		{"a flipped byte in the header's revision", edit(func(b []byte) []byte { b[20] ^= 0x01; return b }), nil,
			"is not a skiff state database at revision", true},
		{"truncated body", edit(func(b []byte) []byte { return b[:len(b)-100] }), nil,
			fmt.Sprintf("truncated: the header announces a body of %d bytes, the file holds %d", len(body), len(body)-100), false},
		{"truncated header", edit(func(b []byte) []byte { return b[:20] }), nil,
			"truncated: 20 bytes, shorter than a snapshot header", false},
		{"empty", edit(func([]byte) []byte { return nil }), nil, "truncated: 0 bytes", false},
		{"bytes after the body", edit(func(b []byte) []byte { return append(b, "more"...) }), nil,
			"damaged: 4 bytes after the", false},
		{"wrong magic", edit(func(b []byte) []byte { copy(b, "SKIFFSNIP"); return b }), nil,
			"not a skiff snapshot: it does not start with SKIFFSNAP", false},
		{"a bare bbolt file", edit(func([]byte) []byte { return body }), nil,
			"not a skiff snapshot", false},
		{"an unknown version", edit(func(b []byte) []byte { b[12] = 9; return b }), nil,
			"snapshot format version 9 is not one this skiff reads (1)", false},
		{"a body that is not bbolt", func(t *testing.T, path string) { writeSnapshotFile(t, path, 3, bytes.Repeat([]byte("x"), 8192)) }, nil,
			"the body is not a bbolt database", true},
		{"a bbolt database of something else", foreignDB, nil, `bucket "kv" is missing`, true},
		{"a directory holding a store", edit(func(b []byte) []byte { return b }), func(t *testing.T, dir string) {
			st := openTest(t, dir, nil)
			mustCreate(t, st, "/keep", "me")
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
		}, "already holds a store (identity.json, raft.db, snapshots, state.db, state.db.clean): restore into a new data directory", false},
		{"a directory holding something else", edit(func(b []byte) []byte { return b }), func(t *testing.T, dir string) {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "notes"), []byte("mine"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "is not empty (notes)", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "data", "server")
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			path := filepath.Join(t.TempDir(), "snap")
			tt.file(t, path)
			before := tree(t, root, !tt.staged)

			_, err := RestoreSnapshot(path, dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("RestoreSnapshot: %v\nwant an error with %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), "restore snapshot "+path+" into "+dir) {
				t.Errorf("the error does not name the file and the directory: %v", err)
			}
			if after := tree(t, root, !tt.staged); !slices.Equal(after, before) {
				t.Errorf("the directory changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}

	// The good file, for contrast, restores.
	if _, err := RestoreSnapshot(good, filepath.Join(t.TempDir(), "server")); err != nil {
		t.Errorf("the good snapshot at rv %d: %v", info.Revision, err)
	}
}

// tree lists what is under root: each path with its mode, size, time (for
// a directory, only when dirTimes) and a hash of its content.
func tree(t *testing.T, root string, dirTimes bool) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		line := fmt.Sprintf("%s %s %d", path, fi.Mode(), fi.Size())
		if !fi.IsDir() || dirTimes {
			line += " " + fi.ModTime().Format(time.RFC3339Nano)
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
