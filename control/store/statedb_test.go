package store

import (
	"os"
	"path/filepath"
	"testing"
)

// TestUncleanStateDBRebuilt: state.db's commits are not synced, so after a
// run that did not close it cleanly (a crash; here: no clean mark and a
// state.db of garbage, as a torn file after a power loss) the store
// rebuilds it from the latest Raft snapshot and the log after it, and every
// object comes back at its revision. A clean close keeps state.db as it is.
func TestUncleanStateDBRebuilt(t *testing.T) {
	for _, tt := range []struct {
		name     string
		snapshot bool // take a snapshot and truncate the log before the crash
	}{{"from the log", false}, {"from a snapshot and the log", true}} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tune := func(c *Config) { c.trailingLogs = 1; c.snapshotThreshold = 1 << 20 }
			s := openTest(t, dir, tune)
			var want []KV
			for _, k := range []string{"/a", "/b", "/c"} {
				want = append(want, mustCreate(t, s, k, k))
			}
			if tt.snapshot {
				snapshotNow(t, s)
				if first, _ := s.logs.FirstIndex(); first <= want[0].ModRevision {
					t.Fatalf("the log still holds index %d after the snapshot: the test would not read the snapshot", want[0].ModRevision)
				}
			}
			want = append(want, mustCreate(t, s, "/d", "d"))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			state := filepath.Join(dir, "state.db")
			if _, err := os.Stat(state + cleanSuffix); err != nil {
				t.Fatalf("a clean close left no mark: %v", err)
			}
			// The crash: no mark, and a state.db that is not a database.
			if err := os.Remove(state + cleanSuffix); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(state, []byte("torn"), 0o600); err != nil {
				t.Fatal(err)
			}

			s = openTest(t, dir, tune)
			kvs, _, err := s.List(testCtx(t), "/")
			if err != nil {
				t.Fatal(err)
			}
			if len(kvs) != len(want) {
				t.Fatalf("after the rebuild: %d objects, want %d: %v", len(kvs), len(want), kvs)
			}
			for i := range want {
				if !kvEqual(kvs[i], want[i]) {
					t.Errorf("after the rebuild: %+v, want %+v", kvs[i], want[i])
				}
			}
			if _, err := os.Stat(state + cleanSuffix); err == nil {
				t.Error("the clean mark is still there while the store runs")
			}
		})
	}
}
