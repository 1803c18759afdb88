package store

import (
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
	// ErrNotLeader: a write reached a server that is not the Raft leader, or
	// leadership was lost while the write was in flight (its outcome is then
	// unknown).
	ErrNotLeader = errors.New("not the leader")
	// ErrClosed: the Store has been closed.
	ErrClosed = errors.New("store closed")
)

// raftErr classifies an error from a raft future for the verb on key.
func raftErr(verb, key string, err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader),
		errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%s %s: %w: %v", verb, key, ErrNotLeader, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%s %s: %w", verb, key, ErrClosed)
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
