package store

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestFailStopOnRaftLog: a write to raft.db that fails stops the server as
// a failed state.db write does: the write is answered "outcome unknown",
// Raft is shut down, reads are refused with the reason, and a restart on a
// sound disk finds everything written before intact.
func TestFailStopOnRaftLog(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	var broken atomic.Bool
	s := openTest(t, dir, func(c *Config) {
		c.LogWriteHookForTesting = func() error {
			if broken.Load() {
				return errInjected
			}
			return nil
		}
	})
	mustCreate(t, s, "/a", "a")

	broken.Store(true)
	_, err := s.Create(ctx, "/b", []byte("b"))
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("write on a failing raft.db: %v, want ErrOutcomeUnknown", err)
	}
	select {
	case <-s.Failed():
	case <-time.After(10 * time.Second):
		t.Fatal("Failed not closed after a raft.db write failure")
	}
	// raft's State may read Follower (its own step-down on the failed
	// append races with Shutdown), and raft.Apply after Shutdown may be
	// queued and never answered: what shows that the server stopped is
	// that it takes no write.
	if _, err := s.Create(ctx, "/c", []byte("c")); !errors.Is(err, ErrClosed) {
		t.Errorf("write after the failure: %v, want ErrClosed", err)
	}
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "store in "+dir) || !strings.Contains(err.Error(), "raft.db write failed (append)") || !errors.Is(err, errInjected) {
		t.Errorf("Err() = %v, want the data dir, raft.db and the cause", err)
	}
	if _, err := s.Get(context.Background(), "/a"); !errors.Is(err, ErrClosed) {
		t.Errorf("read after the failure: %v, want ErrClosed", err)
	}
	s.Close()

	broken.Store(false)
	s = openTest(t, dir, nil)
	if kv, err := s.Get(ctx, "/a"); err != nil || string(kv.Value) != "a" {
		t.Errorf("after a restart /a = %v, %v", kv, err)
	}
	if _, err := s.Create(ctx, "/c", []byte("c")); err != nil {
		t.Errorf("write after a restart: %v", err)
	}
}
