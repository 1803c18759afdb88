package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/hashicorp/raft"
)

// TestSnapshotRestore forces a Raft snapshot (with the log compacted behind
// it), writes more, and reopens the directory: with state.db intact, and with
// state.db lost so that the snapshot is restored and the log replayed on top.
// Either way objects, revisions and watch history are as before.
func TestSnapshotRestore(t *testing.T) {
	tests := []struct {
		name   string
		before func(t *testing.T, dir string)
	}{
		{"state.db intact", func(*testing.T, string) {}},
		{"state.db lost", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "state.db")); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			ctx := testCtx(t)
			tune := func(c *Config) { c.trailingLogs = 1; c.snapshotThreshold = 1 << 20 }
			s := openTest(t, dir, tune)
			for i := range 20 {
				mustCreate(t, s, fmt.Sprintf("/pods/default/p%02d", i), fmt.Sprint(i))
			}
			if _, err := s.Delete(ctx, "/pods/default/p03", 0); err != nil {
				t.Fatal(err)
			}
			if err := s.raft.Snapshot().Error(); err != nil {
				t.Fatalf("snapshot: %v", err)
			}
			if first, _ := s.logs.FirstIndex(); first <= 2 {
				t.Fatalf("log not compacted by the snapshot: first index %d", first)
			}
			mid := s.Revision()
			for i := 20; i < 25; i++ {
				mustCreate(t, s, fmt.Sprintf("/pods/default/p%02d", i), fmt.Sprint(i))
			}
			if _, err := s.Update(ctx, "/pods/default/p00", []byte("changed"), 0); err != nil {
				t.Fatal(err)
			}
			want, wantRev, err := s.List(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			tt.before(t, dir)
			s2 := openTest(t, dir, tune)
			got, gotRev, err := s2.List(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(got, want, kvEqual) {
				t.Errorf("after reopen:\n got %+v\nwant %+v", got, want)
			}
			if gotRev != wantRev {
				t.Errorf("revision %d after reopen, want %d", gotRev, wantRev)
			}
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ch, err := s2.Watch(wctx, "/pods/", mid)
			if err != nil {
				t.Fatal(err)
			}
			evs := collect(t, ch, 6)
			if evs[0].KV.Key != "/pods/default/p20" || evs[5].KV.Key != "/pods/default/p00" {
				t.Errorf("resumed events %v", describe(evs))
			}
			kv := mustCreate(t, s2, "/pods/default/new", "n")
			if kv.ModRevision <= wantRev {
				t.Errorf("new revision %d not above %d", kv.ModRevision, wantRev)
			}
		})
	}
}

// TestApplyReplayIsIdempotent feeds the FSM the same log twice, as raft does
// after a restart: the second pass changes nothing and emits no events.
func TestApplyReplayIsIdempotent(t *testing.T) {
	h := newHub(0, slog.New(slog.DiscardHandler))
	f, err := openFSM(filepath.Join(t.TempDir(), "state.db"), 100, slog.New(slog.DiscardHandler), h)
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	w, _, _ := h.subscribe("", 100)
	defer w.release()

	logs := []*raft.Log{
		{Index: 1, Type: raft.LogConfiguration},
		{Index: 2, Type: raft.LogCommand, Data: command{op: opCreate, key: "/a", value: []byte("1")}.marshal()},
		{Index: 3, Type: raft.LogCommand, Data: command{op: opUpdate, key: "/a", value: []byte("2"), rev: 2}.marshal()},
		{Index: 4, Type: raft.LogCommand, Data: command{op: opCreate, key: "/a", value: []byte("x")}.marshal()},
	}
	res := f.ApplyBatch(logs)
	if r := res[3].(applyResult); !errors.Is(r.err, ErrAlreadyExists) {
		t.Fatalf("index 4: %+v, want ErrAlreadyExists", r)
	}
	if got := len(w.ch); got != 2 {
		t.Fatalf("%d events after first pass, want 2", got)
	}
	for i, l := range logs { // replay one by one, as after a restart
		if r := f.Apply(l); r != nil {
			t.Errorf("replayed index %d returned %+v, want nothing", i+1, r)
		}
	}
	kv, _, err := f.get("/a")
	if err != nil || string(kv.Value) != "2" || kv.ModRevision != 3 || kv.CreateRevision != 2 {
		t.Errorf("after replay /a = %+v, %v", kv, err)
	}
	if f.applied.Load() != 4 || len(w.ch) != 2 {
		t.Errorf("after replay: applied %d, %d events; want 4, 2", f.applied.Load(), len(w.ch))
	}
}

func TestOpenRefusesStateWithoutRaftLog(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	mustCreate(t, s, "/a", "a")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "raft.db")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "snapshots")); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(testCtx(t), Config{Dir: dir})
	if err == nil {
		s2.Close()
		t.Fatal("Open succeeded with state.db but no raft log")
	}
}
