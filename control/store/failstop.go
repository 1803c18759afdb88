package store

import (
	"fmt"
	"sync"
)

// Fail-stop (ARCHITECTURE.md rule 10). When writing state.db fails, the
// state machine can no longer apply committed entries, so this server must
// not go on voting, leading or answering reads from the last state it did
// apply. The first failure is recorded in a failStop; from then on every
// read and write is refused with ErrClosed and the reason, the owner
// goroutine stopOnFailure shuts Raft down and closes the watches, and
// Store.Failed is closed. Nothing but a restart clears it: raft then replays
// the log onto the last state state.db committed.

// failStop records the first storage failure. Any goroutine may call fail
// and err; fail never blocks, so it is safe on raft's goroutines.
type failStop struct {
	once sync.Once
	ch   chan struct{} // closed once err is set
	err  error         // set once, before ch is closed
}

func newFailStop() *failStop { return &failStop{ch: make(chan struct{})} }

// fail records err, unless a failure is already recorded.
func (f *failStop) fail(err error) {
	f.once.Do(func() {
		f.err = err
		close(f.ch)
	})
}

// cause returns the recorded failure, or nil.
func (f *failStop) cause() error {
	select {
	case <-f.ch:
		return f.err
	default:
		return nil
	}
}

// storageFailure says what failed, where and at which Raft index.
type storageFailure struct {
	dir   string // the store's data directory
	index uint64 // the entry being applied (or snapshot being restored)
	what  string // "state.db write failed", "restore snapshot"
	err   error
}

func (e *storageFailure) Error() string {
	return fmt.Sprintf("store in %s failed at index %d: %s: %v", e.dir, e.index, e.what, e.err)
}

func (e *storageFailure) Unwrap() error { return e.err }

// Failed is closed once this store has stopped after a storage failure:
// Raft is shut down (this server no longer votes, leads or applies), watches
// are closed, and reads and writes fail with ErrClosed. Err says why. Close
// does not close it. The way back is a restart on a working disk, which
// replays the Raft log onto the last state state.db committed.
func (s *Store) Failed() <-chan struct{} { return s.failed }

// Err returns the storage failure that stopped this store, naming the data
// directory, the Raft index and the cause, for example
//
//	store in /var/lib/skiff/server failed at index 1234: state.db write failed: no space left on device
//
// or nil while the store is sound. It is non-nil from the moment the
// failure is seen, possibly before Failed is closed.
func (s *Store) Err() error { return s.fsm.fails.cause() }

// refuse returns why the store no longer serves (ErrClosed, with the
// storage failure if there is one), or nil while it does.
func (s *Store) refuse() error {
	if err := s.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	select {
	case <-s.done:
		return ErrClosed
	default:
		return nil
	}
}

// stopOnFailure is the owner of the fail-stop: on a storage failure it
// closes the watches, shuts Raft down and then closes s.failed. It returns
// at once when the store is closed first.
func (s *Store) stopOnFailure() {
	defer s.bg.Done()
	select {
	case <-s.fsm.fails.ch:
	case <-s.done:
		return
	}
	s.log.Error("store: storage failed; stopping Raft on this server (fail-stop)", "err", s.Err())
	s.hub.stop()
	// Shutdown takes the Raft state to Shutdown at once; Error waits for
	// raft's goroutines, the FSM's included, to end.
	_ = s.raft.Shutdown().Error()
	close(s.failed)
}
