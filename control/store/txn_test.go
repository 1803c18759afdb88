package store

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// TestTxnGuards runs a Txn for each guard kind, holding and failing. The
// guard under test comes second, after one that holds, so the error must
// name index 1. A Txn whose guard fails writes nothing and records no event;
// Check agrees with Txn on every case.
func TestTxnGuards(t *testing.T) {
	s := openTest(t, "", nil)
	ctx := testCtx(t)
	ns := mustCreate(t, s, "/namespaces/a", "a")
	pod := mustCreate(t, s, "/pods/a/p", "p")
	mustCreate(t, s, "/pods/bb/q", "q") // shares "/pods/b" but not "/pods/b/"

	tests := []struct {
		name      string
		guard     Guard
		wantFound string
		wantRev   uint64
		holds     bool
	}{
		{"rv holds", IfModRevision("/namespaces/a", ns.ModRevision), "", 0, true},
		{"rv differs", IfModRevision("/namespaces/a", ns.ModRevision+1), "/namespaces/a", ns.ModRevision, false},
		{"rv of missing key", IfModRevision("/namespaces/x", 5), "", 0, false},
		{"present holds", IfPresent("/namespaces/a"), "", 0, true},
		{"present fails", IfPresent("/namespaces/x"), "", 0, false},
		{"absent holds", IfAbsent("/namespaces/x"), "", 0, true},
		{"absent fails", IfAbsent("/namespaces/a"), "/namespaces/a", ns.ModRevision, false},
		{"none under holds", IfNoneUnder("/pods/b/"), "", 0, true},
		{"none under fails", IfNoneUnder("/pods/a/"), "/pods/a/p", pod.ModRevision, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := fmt.Sprintf("/out/%d", i)
			guards := []Guard{IfPresent("/pods/a/p"), tt.guard}
			before, _, err := s.List(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ch, err := s.Watch(wctx, "", 0)
			if err != nil {
				t.Fatal(err)
			}
			checkErr := s.Check(ctx, guards)

			res, err := s.Txn(ctx, Txn{Guards: guards, Ops: []Op{CreateOp(out, []byte("v"))}})
			if tt.holds {
				if err != nil || checkErr != nil {
					t.Fatalf("Txn: %v; Check: %v; want both nil", err, checkErr)
				}
				if len(res.KVs) != 1 || res.KVs[0].Key != out || res.KVs[0].ModRevision != res.Revision || res.Revision != s.Revision() {
					t.Errorf("result %+v, store at %d", res, s.Revision())
				}
				if evs := collect(t, ch, 1); evs[0].KV.Key != out || evs[0].Revision != res.Revision {
					t.Errorf("event %v at %d, want PUT %s at %d", describe(evs), evs[0].Revision, out, res.Revision)
				}
				return
			}

			for _, e := range []struct {
				name string
				err  error
			}{{"Txn", err}, {"Check", checkErr}} {
				var ge *GuardError
				if !errors.Is(e.err, ErrGuardFailed) || !errors.As(e.err, &ge) {
					t.Fatalf("%s: err = %v, want a *GuardError", e.name, e.err)
				}
				if ge.Index != 1 || ge.Guard != tt.guard || ge.Found != tt.wantFound || ge.FoundRevision != tt.wantRev {
					t.Errorf("%s: %+v, want index 1, guard %v, found %q at %d", e.name, *ge, tt.guard, tt.wantFound, tt.wantRev)
				}
				if !strings.Contains(e.err.Error(), "guard 1 ("+tt.guard.String()+")") {
					t.Errorf("%s: %q does not name the guard", e.name, e.err)
				}
			}
			if res.Revision != 0 || res.KVs != nil {
				t.Errorf("failed Txn returned %+v", res)
			}
			after, _, err := s.List(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(before, after, kvEqual) {
				t.Errorf("failed Txn changed the store:\n got %+v\nwant %+v", after, before)
			}
			assertNoEvent(t, ch)
		})
	}
}

func TestTxnGuardErrorMessage(t *testing.T) {
	s := openTest(t, "", nil)
	ctx := testCtx(t)
	p := mustCreate(t, s, "/pods/a/p", "p")
	_, err := s.Txn(ctx, Txn{
		Guards: []Guard{IfNoneUnder("/pods/a/")},
		Ops:    []Op{DeleteOp("/namespaces/a", 0)},
	})
	want := fmt.Sprintf("txn /namespaces/a: guard failed: guard 0 (nothing under /pods/a/): found /pods/a/p at rv %d", p.ModRevision)
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}

// TestTxnAllOrNothing: a Txn of several ops applies them all at one revision,
// or, when one op's own precondition fails, none of them.
func TestTxnAllOrNothing(t *testing.T) {
	s := openTest(t, "", nil)
	ctx := testCtx(t)
	a := mustCreate(t, s, "/k/a", "a1")
	b := mustCreate(t, s, "/k/b", "b1")

	failing := []struct {
		name string
		bad  Op
		want error
	}{
		{"create of existing key", CreateOp("/k/a", nil), ErrAlreadyExists},
		{"update of missing key", UpdateOp("/k/missing", nil, 0), ErrNotFound},
		{"delete at stale rv", DeleteOp("/k/a", a.ModRevision+1), ErrConflict},
	}
	for _, tt := range failing {
		t.Run(tt.name, func(t *testing.T) {
			before, _, _ := s.List(ctx, "")
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ch, err := s.Watch(wctx, "", 0)
			if err != nil {
				t.Fatal(err)
			}
			rev := s.Revision()
			_, err = s.Txn(ctx, Txn{Ops: []Op{
				CreateOp("/k/new", []byte("n")),
				UpdateOp("/k/b", []byte("b2"), b.ModRevision),
				tt.bad,
			}})
			if !errors.Is(err, tt.want) || errors.Is(err, ErrGuardFailed) || !strings.Contains(err.Error(), "op 2: ") {
				t.Fatalf("err = %v, want %v naming op 2", err, tt.want)
			}
			var oe *OpError
			if !errors.As(err, &oe) || oe.Index != 2 || oe.Key != tt.bad.Key() {
				t.Errorf("err = %#v, want an *OpError for op 2 (%s)", err, tt.bad.Key())
			}
			after, _, _ := s.List(ctx, "")
			if !slices.EqualFunc(before, after, kvEqual) {
				t.Errorf("failed Txn changed the store:\n got %+v\nwant %+v", after, before)
			}
			if s.Revision() != rev+1 {
				t.Errorf("revision %d, want %d: the entry takes an index and changes nothing", s.Revision(), rev+1)
			}
			assertNoEvent(t, ch)
		})
	}

	res, err := s.Txn(ctx, Txn{
		Guards: []Guard{IfModRevision("/k/a", a.ModRevision)},
		Ops: []Op{
			CreateOp("/k/new", []byte("n")),
			UpdateOp("/k/b", []byte("b2"), b.ModRevision),
			DeleteOp("/k/a", a.ModRevision),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := res.Revision
	want := []KV{
		{Key: "/k/new", Value: []byte("n"), CreateRevision: r, ModRevision: r},
		{Key: "/k/b", Value: []byte("b2"), CreateRevision: b.CreateRevision, ModRevision: r},
		{Key: "/k/a", Value: []byte("a1"), CreateRevision: a.CreateRevision, ModRevision: r},
	}
	if !slices.EqualFunc(res.KVs, want, kvEqual) {
		t.Errorf("results %+v\nwant %+v", res.KVs, want)
	}
	got, _, _ := s.List(ctx, "/k/")
	if !slices.EqualFunc(got, []KV{want[1], want[0]}, kvEqual) {
		t.Errorf("store holds %+v", got)
	}
}

func TestTxnRefusesMalformed(t *testing.T) {
	s := openTest(t, "", nil)
	ctx := testCtx(t)
	many := make([]Op, MaxTxnOps+1)
	for i := range many {
		many[i] = CreateOp(fmt.Sprintf("/k/%d", i), nil)
	}
	tests := []struct {
		name string
		txn  Txn
		want string
	}{
		{"same key twice", Txn{Ops: []Op{CreateOp("/k", nil), DeleteOp("/k", 0)}}, "op 1: delete /k: key already written by op 0"},
		{"empty op key", Txn{Ops: []Op{CreateOp("", nil)}}, "empty key"},
		{"empty guard key", Txn{Guards: []Guard{IfPresent("")}}, "empty key"},
		{"rv 0 guard", Txn{Guards: []Guard{IfModRevision("/k", 0)}}, "revision 0 (use IfAbsent)"},
		{"zero op", Txn{Ops: []Op{{}}}, "unknown op"},
		{"too many ops", Txn{Ops: many}, "more than 1000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rev := s.Revision()
			_, err := s.Txn(ctx, tt.txn)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if s.Revision() != rev {
				t.Errorf("a refused Txn reached the log")
			}
		})
	}
}

// TestTxnWatch: the events of a Txn share its revision and arrive in op
// order, live and replayed from history; resuming after that revision skips
// them all, resuming before it delivers them all.
func TestTxnWatch(t *testing.T) {
	s := openTest(t, "", nil)
	ctx := testCtx(t)
	before := mustCreate(t, s, "/k/0", "0")
	live, err := s.Watch(ctx, "/k/", 0)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Txn(ctx, Txn{Ops: []Op{
		CreateOp("/k/3", nil), CreateOp("/other/x", nil), CreateOp("/k/1", nil), DeleteOp("/k/0", 0), CreateOp("/k/2", nil),
	}})
	if err != nil {
		t.Fatal(err)
	}
	after := mustCreate(t, s, "/k/9", "9")
	want := []string{"PUT /k/3", "PUT /k/1", "DELETE /k/0", "PUT /k/2", "PUT /k/9"}
	check := func(t *testing.T, evs []Event) {
		t.Helper()
		if got := describe(evs); !slices.Equal(got, want) {
			t.Fatalf("events %v, want %v", got, want)
		}
		for _, ev := range evs[:4] {
			if ev.Revision != res.Revision || ev.KV.ModRevision != res.Revision {
				t.Errorf("%s %s at %d, want %d", ev.Type, ev.KV.Key, ev.Revision, res.Revision)
			}
		}
	}
	t.Run("live", func(t *testing.T) { check(t, collect(t, live, 5)) })
	t.Run("replayed", func(t *testing.T) {
		ch, err := s.Watch(ctx, "/k/", before.ModRevision)
		if err != nil {
			t.Fatal(err)
		}
		check(t, collect(t, ch, 5))
	})
	t.Run("resumed after the txn", func(t *testing.T) {
		ch, err := s.Watch(ctx, "/k/", res.Revision)
		if err != nil {
			t.Fatal(err)
		}
		if evs := collect(t, ch, 1); evs[0].Revision != after.ModRevision {
			t.Errorf("first event %v at %d, want the one after the txn", describe(evs), evs[0].Revision)
		}
	})
	t.Run("history pages end between revisions", func(t *testing.T) {
		for max := 1; max <= 3; max++ {
			evs, next, err := s.fsm.history("/k/", before.ModRevision, after.ModRevision, max)
			if err != nil {
				t.Fatal(err)
			}
			if next != res.Revision || len(evs) != 4 {
				t.Errorf("max %d: page of %d events up to %d, want the txn's 4 up to %d", max, len(evs), next, res.Revision)
			}
		}
	})
}

// TestTxnHistoryTrim: the history is trimmed whole revisions at a time, so
// a watch resumes either with all of a Txn's events or expires.
func TestTxnHistoryTrim(t *testing.T) {
	s := openTest(t, "", func(c *Config) { c.historyLimit = 3 })
	ctx := testCtx(t)
	var revs []uint64
	for i := range 2 {
		res, err := s.Txn(ctx, Txn{Ops: []Op{CreateOp(fmt.Sprintf("/k/%da", i), nil), CreateOp(fmt.Sprintf("/k/%db", i), nil)}})
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, res.Revision)
	}
	// 4 events > 3: the whole first revision goes, not just its first event.
	if comp, _ := s.fsm.compacted(); comp != revs[0] {
		t.Errorf("compacted %d, want %d", comp, revs[0])
	}
	var count uint64
	s.fsm.view(func(tx *bbolt.Tx) error {
		count = getUint64(tx.Bucket(bucketMeta).Get(keyEventCount))
		return nil
	})
	if count != 2 {
		t.Errorf("event count %d, want 2", count)
	}
	if _, err := s.Watch(ctx, "/k/", revs[0]-1); !errors.Is(err, ErrExpired) {
		t.Errorf("watch before the trimmed txn: %v, want ErrExpired", err)
	}
	ch, err := s.Watch(ctx, "/k/", revs[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := describe(collect(t, ch, 2)); !slices.Equal(got, []string{"PUT /k/1a", "PUT /k/1b"}) {
		t.Errorf("resumed %v", got)
	}
	assertNoEvent(t, ch)
}

// TestTxnWatchOverflow: a watcher whose queue cannot take all of a
// revision's events is closed before that revision, never in its middle.
func TestTxnWatchOverflow(t *testing.T) {
	s := openTest(t, "", func(c *Config) { c.watchBuffer = 4 })
	ctx := testCtx(t)
	ch, err := s.Watch(ctx, "/", 0)
	if err != nil {
		t.Fatal(err)
	}
	// Two events queued (or one, and the other taken by the goroutine that
	// serves the watch): not room for the txn's four.
	first := mustCreate(t, s, "/k/first", "v")
	second := mustCreate(t, s, "/k/second", "v")
	var ops []Op
	for i := range 4 {
		ops = append(ops, CreateOp(fmt.Sprintf("/k/%d", i), nil))
	}
	if _, err := s.Txn(ctx, Txn{Ops: ops}); err != nil {
		t.Fatal(err)
	}
	evs := collect(t, ch, 2)
	if evs[0].Revision != first.ModRevision || evs[1].Revision != second.ModRevision {
		t.Fatalf("got %v", describe(evs))
	}
	select {
	case ev, ok := <-ch:
		if ok {
			t.Fatalf("got %s %s at %d, want the channel closed before the txn", ev.Type, ev.KV.Key, ev.Revision)
		}
	case <-testCtx(t).Done():
		t.Fatal("channel of an overflowed watcher not closed")
	}
}

// TestTxnSurvivesRestart writes with Txns and single-key calls, then
// reopens the directory three ways: as it is; with state.db lost, so raft
// replays the whole log, Txn entries included; and with a snapshot taken
// (the log compacted behind it) and state.db lost, so the snapshot is
// restored and the rest of the log replayed. Each time objects, revision
// and watch history are the same as before.
func TestTxnSurvivesRestart(t *testing.T) {
	loseState := func(t *testing.T, dir string) {
		if err := os.Remove(filepath.Join(dir, "state.db")); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name     string
		snapshot bool
		before   func(t *testing.T, dir string)
	}{
		{"reopened", false, func(*testing.T, string) {}},
		{"log replayed", false, loseState},
		{"snapshot restored", true, loseState},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			ctx := testCtx(t)
			tune := func(c *Config) { c.trailingLogs = 1; c.snapshotThreshold = 1 << 20 }
			s := openTest(t, dir, tune)
			ns := mustCreate(t, s, "/namespaces/a", "a")
			start := ns.ModRevision - 1 // > 0: the bootstrap configuration is index 1
			txns := []Txn{
				{Guards: []Guard{IfPresent("/namespaces/a")}, Ops: []Op{CreateOp("/pods/a/p", []byte("p")), CreateOp("/pods/a/q", []byte("q"))}},
				{Guards: []Guard{IfNoneUnder("/pods/a/")}, Ops: []Op{DeleteOp("/namespaces/a", 0)}}, // fails
				{Guards: []Guard{IfModRevision("/namespaces/a", ns.ModRevision)}, Ops: []Op{UpdateOp("/namespaces/a", []byte("a2"), 0), DeleteOp("/pods/a/q", 0)}},
			}
			for i, txn := range txns {
				if i == 2 && tt.snapshot {
					if err := s.raft.Snapshot().Error(); err != nil {
						t.Fatalf("snapshot: %v", err)
					}
					if first, _ := s.logs.FirstIndex(); first <= ns.ModRevision {
						t.Fatalf("log not compacted by the snapshot: first index %d", first)
					}
				}
				if _, err := s.Txn(ctx, txn); (err != nil) != (i == 1) {
					t.Fatalf("txn %d: %v", i, err)
				}
			}
			mustCreate(t, s, "/pods/a/r", "r")
			want, wantRev, err := s.List(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			wantEvs := watchAll(t, s, start)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			tt.before(t, dir)
			s2 := openTest(t, dir, tune)
			got, gotRev, err := s2.List(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(got, want, kvEqual) || gotRev != wantRev {
				t.Errorf("after reopen at %d:\n got %+v\nwant %+v at %d", gotRev, got, want, wantRev)
			}
			if gotEvs := watchAll(t, s2, start); !slices.EqualFunc(gotEvs, wantEvs, eventEqual) {
				t.Errorf("history after reopen:\n got %v\nwant %v", describe(gotEvs), describe(wantEvs))
			}
		})
	}
}

// watchAll returns every event after rev up to the store's revision.
func watchAll(t *testing.T, s *Store, rev uint64) []Event {
	t.Helper()
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	evs, _, err := s.fsm.history("", rev, s.Revision(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := s.Watch(ctx, "", rev)
	if err != nil {
		t.Fatal(err)
	}
	if watched := collect(t, ch, len(evs)); !slices.EqualFunc(watched, evs, eventEqual) {
		t.Fatalf("watch %v, history %v", describe(watched), describe(evs))
	}
	return evs
}

func eventEqual(a, b Event) bool {
	return a.Type == b.Type && a.Revision == b.Revision && kvEqual(a.KV, b.KV) &&
		(a.PrevKV == nil) == (b.PrevKV == nil) && (a.PrevKV == nil || kvEqual(*a.PrevKV, *b.PrevKV))
}

// TestTxnApplyReplayIsIdempotent feeds the FSM Txn entries beside
// single-key ones twice, as raft does after a restart: the second pass
// changes nothing and emits no events.
func TestTxnApplyReplayIsIdempotent(t *testing.T) {
	h := newHub(0, slog.New(slog.DiscardHandler))
	f, err := openFSM(filepath.Join(t.TempDir(), "state.db"), 100, slog.New(slog.DiscardHandler), h)
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	w, _, _ := h.subscribe("", 100)
	defer w.release()

	logs := []*raft.Log{
		{Index: 1, Type: raft.LogCommand, Data: command{op: opCreate, key: "/ns", value: []byte("1")}.marshal()},
		{Index: 2, Type: raft.LogCommand, Data: marshalTxn(Txn{Guards: []Guard{IfPresent("/ns")}, Ops: []Op{CreateOp("/p/1", nil), CreateOp("/p/2", nil)}})},
		{Index: 3, Type: raft.LogCommand, Data: marshalTxn(Txn{Guards: []Guard{IfNoneUnder("/p/")}, Ops: []Op{DeleteOp("/ns", 0)}})},
		{Index: 4, Type: raft.LogCommand, Data: command{op: opDelete, key: "/p/1"}.marshal()},
	}
	res := f.ApplyBatch(logs)
	if r := res[2].(applyResult); !errors.Is(r.err, ErrGuardFailed) {
		t.Fatalf("index 3: %+v, want ErrGuardFailed", r)
	}
	if r := res[1].(applyResult); r.err != nil || r.txn.Revision != 2 || len(r.txn.KVs) != 2 {
		t.Fatalf("index 2: %+v", r)
	}
	if got := len(w.ch); got != 4 {
		t.Fatalf("%d events after first pass, want 4", got)
	}
	for i, l := range logs {
		if r := f.Apply(l); r != nil {
			t.Errorf("replayed index %d returned %+v, want nothing", i+1, r)
		}
	}
	kvs, rev, err := f.list("")
	if err != nil || rev != 4 || len(kvs) != 2 || kvs[0].Key != "/ns" || kvs[1].Key != "/p/2" {
		t.Errorf("after replay: %+v at %d, %v", kvs, rev, err)
	}
	if len(w.ch) != 4 {
		t.Errorf("%d events after replay, want 4", len(w.ch))
	}
}

// TestTxnEncoding pins the log format of a Txn entry: a change here is a
// change of the Raft log format, which old entries must survive.
func TestTxnEncoding(t *testing.T) {
	txn := Txn{
		Guards: []Guard{IfModRevision("/a", 300), IfPresent("/b"), IfAbsent("/c"), IfNoneUnder("/d/")},
		Ops:    []Op{CreateOp("/e", []byte("v")), UpdateOp("/f", nil, 7), DeleteOp("/g", 0)},
	}
	const golden = "04" + "04" +
		"01022f61ac02" + "02022f6200" + "03022f6300" + "04032f642f00" +
		"03" +
		"01022f65000176" + "02022f660700" + "03022f670000"
	b := marshalTxn(txn)
	if got := hex.EncodeToString(b); got != golden {
		t.Fatalf("encoding\n got %s\nwant %s", got, golden)
	}
	back, err := unmarshalTxn(b)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back.Guards, txn.Guards) || !slices.EqualFunc(back.Ops, txn.Ops, func(a, b Op) bool {
		return a.op == b.op && a.key == b.key && a.rev == b.rev && string(a.value) == string(b.value)
	}) {
		t.Errorf("round trip: %+v, want %+v", back, txn)
	}
	for n := range len(b) {
		if _, err := unmarshalTxn(b[:n]); err == nil {
			t.Errorf("truncated to %d bytes: decoded without error", n)
		}
	}
	if _, err := unmarshalTxn([]byte{byte(opTxn), 0xff, 0xff, 0xff, 0xff, 0x0f}); err == nil {
		t.Error("a huge guard count decoded without error")
	}

	// History keys: a revision's first event keeps the key every event had
	// before Txns; later ones sort after it and before the next revision.
	keys := []string{
		hex.EncodeToString(historyKey(0x0102, 0)),
		hex.EncodeToString(historyKey(0x0102, 1)),
		hex.EncodeToString(historyKey(0x0102, 0x10000)),
		hex.EncodeToString(historyKey(0x0103, 0)),
	}
	want := []string{"0000000000000102", "000000000000010200000001", "000000000000010200010000", "0000000000000103"}
	if !slices.Equal(keys, want) || !slices.IsSorted(keys) {
		t.Errorf("history keys %v, want %v", keys, want)
	}
	if revOf(historyKey(7, 3)) != 7 {
		t.Error("revOf does not read back the revision")
	}
}

// FuzzUnmarshalTxn: decoding any bytes fails cleanly or yields a Txn that
// encodes back to the same bytes (shorter only where the input spelled a
// number with more uvarint bytes than needed).
func FuzzUnmarshalTxn(f *testing.F) {
	f.Add(marshalTxn(Txn{Guards: []Guard{IfPresent("/a")}, Ops: []Op{CreateOp("/b", []byte("x"))}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		txn, err := unmarshalTxn(b)
		if err != nil {
			return
		}
		got := marshalTxn(txn)
		if len(got) > len(b) || len(got) == len(b) && string(got) != string(b) {
			t.Errorf("re-encoded %x, was %x", got, b)
		}
	})
}
