package store

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestDiskBoundedUnderChurn: a server that keeps creating and deleting
// objects snapshots on its own and drops the log behind the snapshot, keeps
// snapshotsRetained snapshots, and its data directory does not grow from N
// writes to 2N. The objects written last are all there, after a restart too.
func TestDiskBoundedUnderChurn(t *testing.T) {
	const (
		window      = 8   // live objects at any time
		pairs       = 500 // create+delete pairs per round: N = 1000 writes
		trailing    = 100
		valueSize   = 512
		roundValues = pairs * valueSize // value bytes a round appends to the log
	)
	dir := t.TempDir()
	tune := func(c *Config) {
		c.snapshotThreshold = 200
		c.trailingLogs = trailing
		c.snapshotInterval = 10 * time.Millisecond
		c.historyLimit = 100
	}
	s := openTest(t, dir, tune)
	ctx := testCtx(t)
	value := bytes.Repeat([]byte("v"), valueSize)
	key := func(i int) string { return fmt.Sprintf("/churn/%06d", i) }
	next := 0
	for ; next < window; next++ {
		mustCreate(t, s, key(next), string(value))
	}
	churn := func() {
		t.Helper()
		for range pairs {
			if _, err := s.Create(ctx, key(next), value); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Delete(ctx, key(next-window), 0); err != nil {
				t.Fatal(err)
			}
			next++
		}
	}

	churn()
	// Raft's timer fired many times during the round, each time past the
	// threshold: the log was truncated without anyone asking.
	if first, err := s.logs.FirstIndex(); err != nil || first <= 1 {
		t.Fatalf("after %d writes the log starts at index %d (%v): nothing truncated", 2*pairs, first, err)
	}
	snapshotNow(t, s)
	checkLogAndSnapshots(t, s, dir, trailing)
	sizeN := diskUsage(t, dir)

	churn()
	snapshotNow(t, s)
	checkLogAndSnapshots(t, s, dir, trailing)
	size2N := diskUsage(t, dir)
	t.Logf("data directory after N writes: %d bytes, after 2N: %d", sizeN, size2N)
	// A log that is never truncated keeps every value: the directory would
	// grow by more than the round's values (by about 1 MB here).
	if size2N > sizeN+roundValues {
		t.Errorf("data directory grew from %d to %d bytes over %d writes: more than the %d value bytes they carried", sizeN, size2N, 2*pairs, roundValues)
	}

	var want []string
	for i := next - window; i < next; i++ {
		want = append(want, key(i))
	}
	checkKeys(t, s, want)
	s.Close()
	s = openTest(t, dir, tune)
	checkKeys(t, s, want)
}

// snapshotNow takes a snapshot and truncates the log as raft's timer would.
// When it returns no snapshot is in progress. A snapshot the timer took at
// the last index already is as good.
func snapshotNow(t *testing.T, s *Store) {
	t.Helper()
	if err := s.raft.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		t.Fatalf("snapshot: %v", err)
	}
}

// checkLogAndSnapshots checks that right after a snapshot the log holds
// trailing entries and at most snapshotsRetained snapshots are kept.
func checkLogAndSnapshots(t *testing.T, s *Store, dir string, trailing uint64) {
	t.Helper()
	first, err := s.logs.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.logs.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if kept := last - first + 1; kept > trailing {
		t.Errorf("log holds entries %d to %d after a snapshot: %d, want at most %d", first, last, kept, trailing)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	var snaps []string
	for _, e := range ents {
		if e.IsDir() {
			snaps = append(snaps, e.Name())
		}
	}
	if len(snaps) == 0 || len(snaps) > snapshotsRetained {
		t.Errorf("snapshots kept: %q, want 1 to %d", snaps, snapshotsRetained)
	}
}

// diskUsage is the space the files under dir take on disk, as du counts
// it: bbolt grows its files sparse, so their length overstates it.
func diskUsage(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n += fi.Sys().(*syscall.Stat_t).Blocks * 512
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func checkKeys(t *testing.T, s *Store, want []string) {
	t.Helper()
	kvs, _, err := s.List(testCtx(t), "/churn/")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, kv := range kvs {
		got = append(got, kv.Key)
	}
	if !slices.Equal(got, want) {
		t.Errorf("objects after the churn: %q, want %q", got, want)
	}
}
