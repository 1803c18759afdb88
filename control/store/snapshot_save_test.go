package store

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// saveSnapshot saves s to a snapshot file at path, as `skiff snapshot
// save` does through the API.
func saveSnapshot(t *testing.T, s *Store, path string) SnapshotInfo {
	t.Helper()
	f, err := CreateSnapshotFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Abort()
	info, err := s.Snapshot(testCtx(t), f)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if err := f.Commit(info); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return info
}

// writeSnapshotFile writes a snapshot file with body and a header that
// describes it, except for the revision, which is rev.
func writeSnapshotFile(t *testing.T, path string, rev uint64, body []byte) {
	t.Helper()
	f, err := CreateSnapshotFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(SnapshotInfo{Revision: rev, Size: int64(len(body)), SHA256: sha256.Sum256(body)}); err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotIsConsistent takes a snapshot while creates go on: the copy
// holds exactly the creates at or below its revision.
func TestSnapshotIsConsistent(t *testing.T) {
	s := openTest(t, "", nil)
	mustCreate(t, s, "/pods/default/first", "0")

	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created = map[string]uint64{}
		stop    = make(chan struct{})
		landed  = make(chan struct{}) // closed after some creates
	)
	markLanded := sync.OnceFunc(func() { close(landed) })
	wg.Go(func() {
		defer markLanded()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			key := fmt.Sprintf("/pods/default/p%04d", i)
			kv, err := s.Create(testCtx(t), key, []byte("v"))
			if err != nil {
				t.Errorf("create %s: %v", key, err)
				return
			}
			mu.Lock()
			created[key] = kv.ModRevision
			mu.Unlock()
			if i == 20 {
				markLanded()
			}
		}
	})
	// The copy is taken among the creates.
	<-landed
	path := filepath.Join(t.TempDir(), "snap")
	info := saveSnapshot(t, s, path)
	close(stop)
	wg.Wait()

	restored := filepath.Join(t.TempDir(), "server")
	if _, err := RestoreSnapshot(path, restored); err != nil {
		t.Fatal(err)
	}
	r := openTest(t, restored, nil)
	kvs, _, err := r.List(testCtx(t), "/pods/default/p")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, kv := range kvs {
		got[kv.Key] = true
	}
	mu.Lock()
	defer mu.Unlock()
	for key, rev := range created {
		if got[key] != (rev <= info.Revision) {
			t.Errorf("%s created at rv %d: in the snapshot at rv %d: %v", key, rev, info.Revision, got[key])
		}
	}
}

// TestSnapshotFileCommit: a body that is not what the server announced is
// not committed, and leaves no file behind; one that is replaces the
// target at once.
func TestSnapshotFileCommit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "snap")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	body := []byte("some database bytes")
	good := SnapshotInfo{Revision: 7, Size: int64(len(body)), SHA256: sha256.Sum256(body)}
	tests := []struct {
		name string
		want func(SnapshotInfo) SnapshotInfo
		err  string
	}{
		{"another sha256", func(i SnapshotInfo) SnapshotInfo { i.SHA256[0]++; return i }, "the copy is damaged"},
		{"another size", func(i SnapshotInfo) SnapshotInfo { i.Size++; return i }, "the copy is damaged"},
		{"revision 0", func(i SnapshotInfo) SnapshotInfo { i.Revision = 0; return i }, "revision 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := CreateSnapshotFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(body); err != nil {
				t.Fatal(err)
			}
			err = f.Commit(tt.want(good))
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("Commit: %v, want an error with %q", err, tt.err)
			}
			if b, _ := os.ReadFile(path); string(b) != "old" {
				t.Errorf("the target changed: %q", b)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("left behind: %v", entries)
			}
		})
	}

	writeSnapshotFile(t, path, good.Revision, body)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != snapshotHeaderSize+len(body) || !bytes.HasPrefix(b, []byte("SKIFFSNAP")) || !bytes.HasSuffix(b, body) {
		t.Errorf("file is %q", b)
	}
	info, err := readSnapshotHeader(bytes.NewReader(b))
	if err != nil || info != good {
		t.Errorf("header reads back as %+v, %v; want %+v", info, err, good)
	}
}
