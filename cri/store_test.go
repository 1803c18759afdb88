package cri

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestStateDBBoot: records survive a clean close and a crash of the
// process (same boot); a database left open by a boot that ended is
// discarded, with a warning; without a boot ID every commit is synced.
func TestStateDBBoot(t *testing.T) {
	dir := t.TempDir()
	boot := filepath.Join(dir, "boot_id")
	old := bootIDPath
	bootIDPath = boot
	t.Cleanup(func() { bootIDPath = old })
	setBoot := func(id string) {
		if err := os.WriteFile(boot, []byte(id+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	path := filepath.Join(dir, "cri.db")
	open := func() *stateDB {
		t.Helper()
		db, err := openStateDB(path, log)
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	has := func(db *stateDB, id string) bool {
		t.Helper()
		sbs, _, err := db.load()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range sbs {
			if r.ID == id {
				return true
			}
		}
		return false
	}
	crash := func(db *stateDB) { db.db.Close() } // the bolt file closes; the boot mark stays

	setBoot("boot-a")
	db := open()
	if db.bootPath == "" || !db.db.NoSync {
		t.Fatalf("with a boot ID, commits should not be synced one by one")
	}
	if err := db.putSandbox(&sandboxRecord{ID: "clean"}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".boot"); !os.IsNotExist(err) {
		t.Errorf("the boot mark is still there after a clean close: %v", err)
	}

	db = open()
	if !has(db, "clean") {
		t.Error("a record did not survive a clean close")
	}
	db.putSandbox(&sandboxRecord{ID: "crashed"})
	crash(db)
	db = open() // same boot: a crash of the process
	if !has(db, "crashed") || !has(db, "clean") {
		t.Error("records did not survive a crash of the process")
	}
	crash(db)
	setBoot("boot-b") // the machine restarted without a clean close
	db = open()
	if has(db, "crashed") || has(db, "clean") {
		t.Error("records of a boot that ended were kept")
	}
	if !strings.Contains(logs.String(), "machine restarted") {
		t.Errorf("no warning of the discarded state in the log:\n%s", logs.String())
	}
	db.Close()

	bootIDPath = filepath.Join(dir, "missing")
	db = open()
	defer db.Close()
	if db.bootPath != "" || db.db.NoSync {
		t.Error("without a boot ID, commits should be synced")
	}
}

// TestStateDBGroupCommit: writes made at once are all committed, each in
// its caller's order, in fewer commits than writes; a write that cannot
// be made fails alone.
func TestStateDBGroupCommit(t *testing.T) {
	db, err := openStateDB(filepath.Join(t.TempDir(), "cri.db"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const writers, each = 32, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				id := fmt.Sprintf("c%d-%d", i, j)
				// Each record is written, rewritten, and every other one deleted.
				if err := db.putContainer(&containerRecord{ID: id, Name: "first"}); err != nil {
					errs <- err
				}
				if err := db.putContainer(&containerRecord{ID: id, Name: "second"}); err != nil {
					errs <- err
				}
				if j%2 == 1 {
					if err := db.deleteContainer(id); err != nil {
						errs <- err
					}
				}
			}
		}()
	}
	// One bad write among them (a key past bbolt's limit).
	bad := db.write(&stateWrite{bucket: bucketContainers, key: bytes.Repeat([]byte("k"), 40000), value: []byte("{}")})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if bad == nil {
		t.Error("a key past bbolt's limit was written")
	}
	_, ctrs, err := db.load()
	if err != nil {
		t.Fatal(err)
	}
	if len(ctrs) != writers*each/2 {
		t.Errorf("%d records, want %d", len(ctrs), writers*each/2)
	}
	for _, c := range ctrs {
		if c.Name != "second" {
			t.Errorf("record %s is %q, want its last write", c.ID, c.Name)
		}
	}
	writes := uint64(writers * each * 5 / 2)
	if n := db.commits.Load(); n >= writes {
		t.Errorf("%d commits for %d writes, want fewer", n, writes)
	} else {
		t.Logf("%d commits for %d writes", n, writes)
	}
}
