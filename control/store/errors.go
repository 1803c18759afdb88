package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// Sentinel errors. Every error returned by the Store wraps one of these (or a
// context error) with the verb, the key and, where it helps, the revisions
// involved, for example "update /pods/default/x: conflict: have rv 12, want 9".
// Test for them with errors.Is.
var (
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: Create of a key that exists.
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict: the revision given to Update or Delete is not the key's
	// current ModRevision.
	ErrConflict = errors.New("conflict")
	// ErrGuardFailed: a guard of a Txn did not hold, so the Txn wrote
	// nothing. The error is a *GuardError naming the guard.
	ErrGuardFailed = errors.New("guard failed")
	// ErrExpired: Watch from a revision older than the retained history; the
	// caller must List again and watch from the revision List returns.
	ErrExpired = errors.New("expired")
	// ErrFutureRevision: Watch from a revision this store has not reached;
	// an error rather than a wait, as etcd does.
	ErrFutureRevision = errors.New("future revision")
	// ErrNotLeader: a write reached a server that is not the Raft leader and
	// was refused before being proposed: it did not happen.
	ErrNotLeader = errors.New("not the leader")
	// ErrClosed: the Store has been closed, or has stopped after a storage
	// failure (the error then says why, and so does Store.Err). A write
	// refused with it was not proposed: it did not happen.
	ErrClosed = errors.New("store closed")
	// ErrOutcomeUnknown: a write was proposed to Raft and then its answer
	// was lost (leadership lost, Raft shut down, the state machine failed,
	// ctx ended while waiting), so it may or may not have been committed,
	// and may still apply. The error is an *OutcomeUnknownError; read the
	// key to see what happened. It can wrap a context error too: test for
	// it before context.Canceled and context.DeadlineExceeded.
	ErrOutcomeUnknown = errors.New("outcome unknown")
)

// OutcomeUnknownError is the error of a write whose outcome is unknown. It
// wraps ErrOutcomeUnknown and Err; get it with errors.As.
type OutcomeUnknownError struct {
	Verb string // create, update, delete, txn
	Key  string // the key written (a Txn's first)
	// Err is why the answer was lost: raft.ErrLeadershipLost, raft's
	// shutdown, the store's storage failure, or ctx's error.
	Err error
}

func (e *OutcomeUnknownError) Error() string {
	return fmt.Sprintf("%s %s: %s: the write was proposed but its result was lost (%v)", e.Verb, e.Key, ErrOutcomeUnknown, e.Err)
}

func (e *OutcomeUnknownError) Unwrap() []error { return []error{ErrOutcomeUnknown, e.Err} }

// raftErr classifies an error from a raft future for the verb on key.
// proposed says whether raft appended the entry to its log (the future has
// an index): then any error leaves the outcome unknown. An entry refused
// before that did not happen.
func raftErr(verb, key string, err error, proposed bool) error {
	switch {
	case proposed, errors.Is(err, raft.ErrLeadershipLost):
		return &OutcomeUnknownError{Verb: verb, Key: key, Err: err}
	case errors.Is(err, raft.ErrNotLeader),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%s %s: %w: %v", verb, key, ErrNotLeader, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%s %s: %w", verb, key, ErrClosed)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%s %s: %w: %v", verb, key, context.DeadlineExceeded, err)
	default:
		return fmt.Errorf("%s %s: %w", verb, key, err)
	}
}

// dbErr classifies an error from reading the state database.
func dbErr(verb, key string, err error) error {
	if errors.Is(err, bbolt.ErrDatabaseNotOpen) {
		err = ErrClosed
	}
	return fmt.Errorf("%s %s: %w", verb, key, err)
}
