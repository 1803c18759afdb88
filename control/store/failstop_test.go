package store

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// errInjected is the disk error the tests inject into state.db writes.
var errInjected = errors.New("injected: no space left on device")

// faultyDisk fails every state.db write of a command at or after index at,
// once armed.
type faultyDisk struct{ at atomic.Uint64 }

func (d *faultyDisk) hook(index uint64) error {
	if at := d.at.Load(); at != 0 && index >= at {
		return errInjected
	}
	return nil
}

// arm fails the next command s applies.
func (d *faultyDisk) arm(s *Store) { d.at.Store(s.Revision() + 1) }

// TestFailStop injects a state.db write failure into the next apply and
// checks what callers see: the write that met it is answered "outcome
// unknown", not as an error that says it did not happen; the store stops
// (Failed, Raft shut down, no leadership, watches closed) and refuses reads
// and writes with the reason; and a restart on a sound disk replays the
// committed log, so the write turns out to have happened, everything before
// it is intact, and the store works.
func TestFailStop(t *testing.T) {
	tests := []struct {
		name  string
		write func(ctx context.Context, s *Store) error
		after map[string]string // key -> value once reopened
	}{
		{"create", func(ctx context.Context, s *Store) error {
			_, err := s.Create(ctx, "/b", []byte("b"))
			return err
		}, map[string]string{"/a": "a", "/b": "b"}},
		{"update", func(ctx context.Context, s *Store) error {
			_, err := s.Update(ctx, "/a", []byte("a2"), 0)
			return err
		}, map[string]string{"/a": "a2"}},
		{"delete", func(ctx context.Context, s *Store) error {
			_, err := s.Delete(ctx, "/a", 0)
			return err
		}, map[string]string{}},
		{"txn", func(ctx context.Context, s *Store) error {
			_, err := s.Txn(ctx, Txn{Guards: []Guard{IfAbsent("/b")}, Ops: []Op{CreateOp("/b", []byte("b")), UpdateOp("/a", []byte("a2"), 0)}})
			return err
		}, map[string]string{"/a": "a2", "/b": "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			dir := t.TempDir()
			disk := &faultyDisk{}
			s := openTest(t, dir, func(c *Config) { c.ApplyHookForTesting = disk.hook })
			good := mustCreate(t, s, "/a", "a")
			watch, err := s.Watch(ctx, "/", 0)
			if err != nil {
				t.Fatal(err)
			}
			leader := s.LeaderCh()
			<-leader // true

			disk.arm(s)
			err = tt.write(ctx, s)
			var oe *OutcomeUnknownError
			if !errors.Is(err, ErrOutcomeUnknown) || !errors.As(err, &oe) {
				t.Fatalf("write on a failing disk: %v, want ErrOutcomeUnknown", err)
			}
			if errors.Is(err, ErrClosed) || errors.Is(err, ErrNotLeader) || !errors.Is(err, errInjected) {
				t.Errorf("write on a failing disk: %v, want only outcome unknown, caused by the disk", err)
			}
			if !strings.Contains(err.Error(), "outcome unknown: the write was proposed but its result was lost (store in "+dir) {
				t.Errorf("write error %q does not say the outcome is unknown and why", err)
			}

			select {
			case <-s.Failed():
			case <-time.After(10 * time.Second):
				t.Fatal("Failed not closed after a storage failure")
			}
			if st := s.raft.State(); st != raft.Shutdown {
				t.Errorf("raft state %v after the failure, want Shutdown", st)
			}
			if s.IsLeader() {
				t.Error("still leader after the failure")
			}
			wantErr := "store in " + dir + " failed at index "
			if e := s.Err(); e == nil || !strings.HasPrefix(e.Error(), wantErr) || !errors.Is(e, errInjected) {
				t.Errorf("Err() = %v, want %q... caused by the disk", e, wantErr)
			}
			if got := s.Revision(); got != good.ModRevision {
				t.Errorf("revision %d after the failure, want the last good one, %d", got, good.ModRevision)
			}

			refused := map[string]func() error{
				"get":    func() error { _, err := s.Get(ctx, "/a"); return err },
				"list":   func() error { _, _, err := s.List(ctx, "/"); return err },
				"check":  func() error { return s.Check(ctx, []Guard{IfPresent("/a")}) },
				"watch":  func() error { _, err := s.Watch(ctx, "/", 0); return err },
				"create": func() error { _, err := s.Create(ctx, "/c", nil); return err },
				"txn": func() error {
					_, err := s.Txn(ctx, Txn{Ops: []Op{CreateOp("/c", nil)}})
					return err
				},
			}
			t.Logf("the write: %v", err)
			t.Logf("Err: %v", s.Err())
			for name, op := range refused {
				err := op()
				t.Logf("%s: %v", name, err)
				if !errors.Is(err, ErrClosed) || !errors.Is(err, errInjected) || errors.Is(err, ErrOutcomeUnknown) {
					t.Errorf("%s after the failure: %v, want ErrClosed with the reason", name, err)
				}
			}
			drain(t, "watch", watch)
			select {
			case v := <-leader:
				if v {
					t.Error("LeaderCh says leader after the failure")
				}
			case <-time.After(10 * time.Second):
				t.Error("LeaderCh did not report the loss of leadership")
			}

			if err := s.Close(); err != nil {
				t.Errorf("Close after the failure: %v", err)
			}

			// Restart on a sound disk.
			s2 := openTest(t, dir, nil)
			kvs, _, err := s2.List(ctx, "/")
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, kv := range kvs {
				got[kv.Key] = string(kv.Value)
				if kv.Key == "/a" && string(kv.Value) == "a" && !kvEqual(kv, good) {
					t.Errorf("/a after restart %+v, want %+v", kv, good)
				}
			}
			if !maps.Equal(got, tt.after) {
				t.Errorf("after restart %v, want %v (the write was committed, so it happened)", got, tt.after)
			}
			mustCreate(t, s2, "/c", "c")
		})
	}
}

// TestWriteOutcomeUnknownOnCtxEnd: a write whose ctx ends while it waits
// for the state machine is answered "outcome unknown", and it does happen.
func TestWriteOutcomeUnknownOnCtxEnd(t *testing.T) {
	var hold atomic.Bool
	entered, release := make(chan struct{}), make(chan struct{})
	s := openTest(t, "", func(c *Config) {
		c.ApplyHookForTesting = func(uint64) error {
			if hold.CompareAndSwap(true, false) {
				close(entered)
				<-release
			}
			return nil
		}
	})
	released := false
	releaseOnce := func() {
		if !released {
			released = true
			close(release)
		}
	}
	defer releaseOnce()

	hold.Store(true)
	ctx, cancel := context.WithCancel(testCtx(t))
	go func() {
		<-entered // the entry is committed and being applied
		cancel()
	}()
	_, err := s.Create(ctx, "/x", []byte("x"))
	releaseOnce()
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, context.Canceled) {
		t.Fatalf("create cut off by its ctx: %v, want ErrOutcomeUnknown (context canceled)", err)
	}
	mustCreate(t, s, "/y", "y") // applied after /x
	if kv, err := s.Get(testCtx(t), "/x"); err != nil || string(kv.Value) != "x" {
		t.Errorf("get /x = %+v, %v: the write whose outcome was unknown should have happened", kv, err)
	}
}

// TestWriteRefusedIsNotOutcomeUnknown: a write ended before it is proposed
// did not happen and says so.
func TestWriteRefusedIsNotOutcomeUnknown(t *testing.T) {
	s := openTest(t, "", nil)
	ctx, cancel := context.WithCancel(testCtx(t))
	cancel()
	_, err := s.Create(ctx, "/x", nil)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("create with an ended ctx: %v, want context.Canceled only", err)
	}
	if _, err := s.Get(testCtx(t), "/x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get /x: %v, want ErrNotFound", err)
	}
}

func drain(t *testing.T, what string, ch <-chan Event) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatalf("%s channel not closed", what)
		}
	}
}
