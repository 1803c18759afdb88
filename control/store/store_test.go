package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
)

// TestCRUD runs a transcript of operations against one store; each step
// names what a caller would see.
func TestCRUD(t *testing.T) {
	s := openTest(t, "", nil)
	ctx := testCtx(t)
	const key = "/pods/default/hello"

	var created, updated KV
	steps := []struct {
		name    string
		do      func() (KV, error)
		wantErr error
		check   func(t *testing.T, kv KV)
	}{
		{"get missing", func() (KV, error) { return s.Get(ctx, key) }, ErrNotFound, nil},
		{"update missing", func() (KV, error) { return s.Update(ctx, key, []byte("x"), 0) }, ErrNotFound, nil},
		{"delete missing", func() (KV, error) { return s.Delete(ctx, key, 0) }, ErrNotFound, nil},
		{"create", func() (KV, error) { return s.Create(ctx, key, []byte("v1")) }, nil, func(t *testing.T, kv KV) {
			created = kv
			if kv.Key != key || string(kv.Value) != "v1" || kv.CreateRevision == 0 || kv.ModRevision != kv.CreateRevision {
				t.Errorf("created %+v", kv)
			}
		}},
		{"create again", func() (KV, error) { return s.Create(ctx, key, []byte("v2")) }, ErrAlreadyExists, nil},
		{"get", func() (KV, error) { return s.Get(ctx, key) }, nil, func(t *testing.T, kv KV) {
			if !kvEqual(kv, created) {
				t.Errorf("got %+v, want %+v", kv, created)
			}
		}},
		{"update stale rev", func() (KV, error) { return s.Update(ctx, key, []byte("v2"), created.ModRevision+100) }, ErrConflict, nil},
		{"update current rev", func() (KV, error) { return s.Update(ctx, key, []byte("v2"), created.ModRevision) }, nil, func(t *testing.T, kv KV) {
			updated = kv
			if string(kv.Value) != "v2" || kv.CreateRevision != created.CreateRevision || kv.ModRevision <= created.ModRevision {
				t.Errorf("updated %+v after %+v", kv, created)
			}
		}},
		{"update with old rev conflicts", func() (KV, error) { return s.Update(ctx, key, []byte("v3"), created.ModRevision) }, ErrConflict, nil},
		{"value unchanged after conflict", func() (KV, error) { return s.Get(ctx, key) }, nil, func(t *testing.T, kv KV) {
			if !kvEqual(kv, updated) {
				t.Errorf("got %+v, want %+v", kv, updated)
			}
		}},
		{"update unconditional", func() (KV, error) { return s.Update(ctx, key, []byte("v3"), 0) }, nil, func(t *testing.T, kv KV) {
			if string(kv.Value) != "v3" || kv.ModRevision <= updated.ModRevision {
				t.Errorf("updated %+v after %+v", kv, updated)
			}
			updated = kv
		}},
		{"delete stale rev", func() (KV, error) { return s.Delete(ctx, key, created.ModRevision) }, ErrConflict, nil},
		{"delete current rev", func() (KV, error) { return s.Delete(ctx, key, updated.ModRevision) }, nil, func(t *testing.T, kv KV) {
			if string(kv.Value) != "v3" || kv.CreateRevision != created.CreateRevision || kv.ModRevision <= updated.ModRevision {
				t.Errorf("deleted %+v after %+v", kv, updated)
			}
		}},
		{"get after delete", func() (KV, error) { return s.Get(ctx, key) }, ErrNotFound, nil},
		{"recreate gets new create revision", func() (KV, error) { return s.Create(ctx, key, nil) }, nil, func(t *testing.T, kv KV) {
			if kv.CreateRevision <= created.CreateRevision || len(kv.Value) != 0 {
				t.Errorf("recreated %+v", kv)
			}
		}},
		{"empty key rejected", func() (KV, error) { return s.Create(ctx, "", []byte("x")) }, nil, nil},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			kv, err := st.do()
			switch {
			case st.name == "empty key rejected":
				if err == nil {
					t.Fatal("no error for an empty key")
				}
			case st.wantErr != nil:
				if !errors.Is(err, st.wantErr) {
					t.Fatalf("err = %v, want %v", err, st.wantErr)
				}
				if !strings.Contains(err.Error(), key) {
					t.Errorf("error %q does not name the key", err)
				}
			case err != nil:
				t.Fatalf("unexpected error: %v", err)
			}
			if st.check != nil {
				st.check(t, kv)
			}
		})
	}
}

func TestConflictMessage(t *testing.T) {
	s := openTest(t, "", nil)
	ctx := testCtx(t)
	kv := mustCreate(t, s, "/pods/default/x", "a")
	_, err := s.Update(ctx, "/pods/default/x", []byte("b"), kv.ModRevision+7)
	want := fmt.Sprintf("update /pods/default/x: conflict: have rv %d, want %d", kv.ModRevision, kv.ModRevision+7)
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

// TestRevisionsAreRaftIndexes checks that each write's revision is the index
// of the Raft log entry carrying it.
func TestRevisionsAreRaftIndexes(t *testing.T) {
	s := openTest(t, "", nil)
	ctx := testCtx(t)
	var last uint64
	for i := range 5 {
		key := fmt.Sprintf("/k/%d", i)
		kv, err := s.Create(ctx, key, []byte("v"))
		if err != nil {
			t.Fatal(err)
		}
		if kv.ModRevision <= last {
			t.Fatalf("revision %d not above previous %d", kv.ModRevision, last)
		}
		last = kv.ModRevision
		if got := s.raft.LastIndex(); got != kv.ModRevision {
			t.Errorf("%s: ModRevision %d, raft last index %d", key, kv.ModRevision, got)
		}
		var l raft.Log
		if err := s.logs.GetLog(kv.ModRevision, &l); err != nil {
			t.Fatalf("log %d: %v", kv.ModRevision, err)
		}
		c, err := unmarshalCommand(l.Data)
		if l.Type != raft.LogCommand || err != nil || c.op != opCreate || c.key != key {
			t.Errorf("log %d = %v %+v (%v), want create %s", kv.ModRevision, l.Type, c, err, key)
		}
		if s.Revision() != kv.ModRevision {
			t.Errorf("Revision() = %d, want %d", s.Revision(), kv.ModRevision)
		}
	}
}

func TestList(t *testing.T) {
	s := openTest(t, "", nil)
	ctx := testCtx(t)
	for _, k := range []string{"/pods/kube/b", "/pods/default/c", "/svc/default/a", "/pods/default/a", "/pods/defaultx/z"} {
		mustCreate(t, s, k, k)
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"/pods/default/", []string{"/pods/default/a", "/pods/default/c"}},
		{"/pods/", []string{"/pods/default/a", "/pods/default/c", "/pods/defaultx/z", "/pods/kube/b"}},
		{"", []string{"/pods/default/a", "/pods/default/c", "/pods/defaultx/z", "/pods/kube/b", "/svc/default/a"}},
		{"/nodes/", nil},
	}
	for _, tt := range tests {
		t.Run("prefix="+tt.prefix, func(t *testing.T) {
			kvs, rev, err := s.List(ctx, tt.prefix)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, kv := range kvs {
				got = append(got, kv.Key)
				if string(kv.Value) != kv.Key {
					t.Errorf("%s = %q", kv.Key, kv.Value)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("keys = %v, want %v", got, tt.want)
			}
			if rev != s.Revision() {
				t.Errorf("list revision %d, store revision %d", rev, s.Revision())
			}
		})
	}
}

// TestReopen closes a store and opens its directory again: objects,
// revisions and the watch history survive, and new revisions continue.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := testCtx(t)
	s := openTest(t, dir, nil)
	a := mustCreate(t, s, "/pods/default/a", "a1")
	mustCreate(t, s, "/pods/default/b", "b1")
	a2, err := s.Update(ctx, "/pods/default/a", []byte("a2"), a.ModRevision)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, "/pods/default/b", 0); err != nil {
		t.Fatal(err)
	}
	before, rev, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openTest(t, dir, nil)
	after, rev2, err := s2.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(before, after, kvEqual) {
		t.Errorf("after reopen: %+v, want %+v", after, before)
	}
	if rev2 < rev {
		t.Errorf("revision went back from %d to %d", rev, rev2)
	}
	got, err := s2.Get(ctx, "/pods/default/a")
	if err != nil || !kvEqual(got, a2) {
		t.Errorf("Get after reopen = %+v, %v; want %+v", got, err, a2)
	}
	c := mustCreate(t, s2, "/pods/default/c", "c1")
	if c.ModRevision <= rev {
		t.Errorf("new write got revision %d, not above %d", c.ModRevision, rev)
	}

	// The history from before the restart is still there.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := s2.Watch(wctx, "/pods/", a.ModRevision)
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(t, ch, 4)
	want := []string{"PUT /pods/default/b", "PUT /pods/default/a", "DELETE /pods/default/b", "PUT /pods/default/c"}
	if got := describe(evs); !slices.Equal(got, want) {
		t.Errorf("events after reopen = %v, want %v", got, want)
	}
}

// TestConcurrentCAS hammers one counter from several goroutines that
// read-modify-write with compare-and-swap and retry on conflict: the final
// count is exact.
func TestConcurrentCAS(t *testing.T) {
	s := openTest(t, "", nil)
	ctx := testCtx(t)
	const key, workers, perWorker = "/counter", 8, 25
	mustCreate(t, s, key, "0")

	var wg sync.WaitGroup
	var mu sync.Mutex
	conflicts := 0
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range perWorker {
				for {
					kv, err := s.Get(ctx, key)
					if err != nil {
						errs <- err
						return
					}
					n, _ := strconv.Atoi(string(kv.Value))
					_, err = s.Update(ctx, key, []byte(strconv.Itoa(n+1)), kv.ModRevision)
					if errors.Is(err, ErrConflict) {
						mu.Lock()
						conflicts++
						mu.Unlock()
						continue
					}
					if err != nil {
						errs <- err
						return
					}
					break
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	kv, err := s.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(kv.Value); got != strconv.Itoa(workers*perWorker) {
		t.Errorf("counter = %s, want %d", got, workers*perWorker)
	}
	t.Logf("%d conflicts retried", conflicts)
}

func TestLeadership(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	if !s.IsLeader() {
		t.Fatal("single server is not leader after Open")
	}
	ch := s.LeaderCh()
	if v := <-ch; !v {
		t.Fatal("LeaderCh first value false, want true")
	}
	ch2 := s.LeaderCh() // a second subscriber gets its own channel
	if v := <-ch2; !v {
		t.Fatal("second LeaderCh first value false, want true")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []<-chan bool{ch, ch2} {
		for range c { // may hold a final false; must then be closed
		}
	}
	if _, ok := <-s.LeaderCh(); ok {
		t.Error("LeaderCh after Close is not closed")
	}
}

func TestClosed(t *testing.T) {
	s := openTest(t, "", nil)
	ctx := testCtx(t)
	mustCreate(t, s, "/a", "a")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ops := map[string]func() error{
		"get":    func() error { _, err := s.Get(ctx, "/a"); return err },
		"list":   func() error { _, _, err := s.List(ctx, "/"); return err },
		"create": func() error { _, err := s.Create(ctx, "/b", nil); return err },
		"update": func() error { _, err := s.Update(ctx, "/a", nil, 0); return err },
		"delete": func() error { _, err := s.Delete(ctx, "/a", 0); return err },
		"watch":  func() error { _, err := s.Watch(ctx, "/", 0); return err },
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

// TestRaftErrClassification: an error from a write raft refused before
// appending it says the write did not happen; any error once it was
// appended (it has an index), and leadership lost, leave the outcome
// unknown, never "not the leader" or "closed".
func TestRaftErrClassification(t *testing.T) {
	tests := []struct {
		name     string
		in       error
		proposed bool
		want     error
	}{
		{"not leader", raft.ErrNotLeader, false, ErrNotLeader},
		{"transfer in progress", raft.ErrLeadershipTransferInProgress, false, ErrNotLeader},
		{"shut down before proposing", raft.ErrRaftShutdown, false, ErrClosed},
		{"enqueue timeout", raft.ErrEnqueueTimeout, false, context.DeadlineExceeded},
		{"leadership lost", raft.ErrLeadershipLost, true, ErrOutcomeUnknown},
		{"leadership lost, no index", raft.ErrLeadershipLost, false, ErrOutcomeUnknown},
		{"shut down after proposing", raft.ErrRaftShutdown, true, ErrOutcomeUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := raftErr("update", "/k", tt.in, tt.proposed)
			if !errors.Is(err, tt.want) {
				t.Errorf("raftErr(%v, proposed %v) = %v, want %v", tt.in, tt.proposed, err, tt.want)
			}
			unknown := errors.Is(err, ErrOutcomeUnknown)
			if unknown && (errors.Is(err, ErrNotLeader) || errors.Is(err, ErrClosed)) {
				t.Errorf("raftErr(%v) = %v: outcome unknown, yet also says it did not happen", tt.in, err)
			}
			if unknown && !strings.Contains(err.Error(), "update /k: outcome unknown: ") {
				t.Errorf("raftErr(%v) = %q, want it to name the write and say outcome unknown", tt.in, err)
			}
		})
	}
}

func mustCreate(t testing.TB, s *Store, key, value string) KV {
	t.Helper()
	kv, err := s.Create(testCtx(t), key, []byte(value))
	if err != nil {
		t.Fatalf("create %s: %v", key, err)
	}
	return kv
}

func kvEqual(a, b KV) bool {
	return a.Key == b.Key && bytes.Equal(a.Value, b.Value) &&
		a.CreateRevision == b.CreateRevision && a.ModRevision == b.ModRevision
}

// TestRaftLogsBridged checks raft's hclog output reaches the injected slog
// logger: its INFO chatter at DEBUG, tagged with component=raft.
func TestRaftLogsBridged(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	openTest(t, "", func(c *Config) { c.Logger = logger })
	out := buf.String()
	if !strings.Contains(out, "level=DEBUG msg=\"entering leader state\"") || !strings.Contains(out, "component=raft") {
		t.Errorf("raft log lines missing from slog output:\n%s", out)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
