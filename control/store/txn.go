package store

import (
	"context"
	"errors"
	"fmt"
)

// Txn is a transaction: guards on the current state and the writes to make
// if every guard holds. It is one Raft log entry, applied all or nothing:
// the guards are checked, then every op's own precondition (a create needs
// its key absent, an update or delete needs it present at the given
// revision), and only if all hold are the ops written, all at the entry's
// index as their revision. Guards see the state before any op of the Txn.
//
// A rule that spans objects (an object's namespace exists, a namespace is
// empty before it goes) is a guard beside the write it protects, so that no
// other write can come between the check and the write.
type Txn struct {
	Guards []Guard // at most 128
	Ops    []Op    // at most 1000, each on a different key
}

// TxnResult is what a Txn that applied left behind.
type TxnResult struct {
	// Revision is the index of the Raft entry that applied the Txn: every
	// op's ModRevision and the Revision of every event it produced.
	Revision uint64
	// KVs holds one object per op, in the order of Txn.Ops, as Create,
	// Update and Delete return it.
	KVs []KV
}

// Limits of one Txn. An entry is applied in one go and its events reach a
// watcher together (never split), so a Txn must fit a watcher's queue
// (defaultWatchBuffer) with room to spare. MaxTxnOps is as many objects as
// one batched write (PodService.BindBatch) may change.
const (
	maxTxnGuards = 128
	MaxTxnOps    = 1000
)

// guardKind is the encoded kind of a Guard in the Raft log. The values are
// part of the log format: never renumber them.
type guardKind byte

const (
	guardModRevision guardKind = 1 // key exists at ModRevision rev
	guardPresent     guardKind = 2 // key exists
	guardAbsent      guardKind = 3 // key does not exist
	guardNoneUnder   guardKind = 4 // no key starts with key (a prefix)
)

// Guard is a condition on the state that a Txn checks before it writes.
// Make one with IfModRevision, IfPresent, IfAbsent or IfNoneUnder.
type Guard struct {
	kind guardKind
	key  string // the key, or the prefix for IfNoneUnder
	rev  uint64
}

// IfModRevision holds if key exists and its ModRevision is rev (> 0).
func IfModRevision(key string, rev uint64) Guard {
	return Guard{kind: guardModRevision, key: key, rev: rev}
}

// IfPresent holds if key exists.
func IfPresent(key string) Guard { return Guard{kind: guardPresent, key: key} }

// IfAbsent holds if key does not exist.
func IfAbsent(key string) Guard { return Guard{kind: guardAbsent, key: key} }

// IfNoneUnder holds if no key starts with prefix.
func IfNoneUnder(prefix string) Guard { return Guard{kind: guardNoneUnder, key: prefix} }

// Key returns the key the guard is about, or its prefix for IfNoneUnder.
func (g Guard) Key() string { return g.key }

func (g Guard) String() string {
	switch g.kind {
	case guardModRevision:
		return fmt.Sprintf("%s at rv %d", g.key, g.rev)
	case guardPresent:
		return g.key + " present"
	case guardAbsent:
		return g.key + " absent"
	case guardNoneUnder:
		return "nothing under " + g.key
	}
	return fmt.Sprintf("guard(%d) %s", byte(g.kind), g.key)
}

func (g Guard) check() error {
	if err := checkKey(g.key); err != nil {
		return fmt.Errorf("guard %s: %w", g, err)
	}
	switch g.kind {
	case guardModRevision:
		if g.rev == 0 {
			return fmt.Errorf("guard %s: revision 0 (use IfAbsent)", g)
		}
	case guardPresent, guardAbsent, guardNoneUnder:
	default:
		return fmt.Errorf("unknown guard kind %d", byte(g.kind))
	}
	return nil
}

// Op is one write of a Txn, with the meaning of the Store method of the
// same name. Make one with CreateOp, UpdateOp or DeleteOp.
//
// Its fields are those of command, in the same order, so that the two
// convert into each other.
type Op struct {
	op    op
	key   string
	rev   uint64
	value []byte
}

// CreateOp stores value at key, which must not exist (ErrAlreadyExists).
func CreateOp(key string, value []byte) Op { return Op{op: opCreate, key: key, value: value} }

// UpdateOp replaces the value at key if rev is its ModRevision (rev 0:
// unconditionally); ErrNotFound or ErrConflict otherwise.
func UpdateOp(key string, value []byte, rev uint64) Op {
	return Op{op: opUpdate, key: key, value: value, rev: rev}
}

// DeleteOp removes key if rev is its ModRevision (rev 0: unconditionally);
// ErrNotFound or ErrConflict otherwise.
func DeleteOp(key string, rev uint64) Op { return Op{op: opDelete, key: key, rev: rev} }

// Key returns the key the op writes.
func (o Op) Key() string { return o.key }

func (o Op) check() error {
	switch o.op {
	case opCreate, opUpdate, opDelete:
	default:
		return fmt.Errorf("%s %q: unknown op", o.op, o.key)
	}
	if err := checkKey(o.key); err != nil {
		return fmt.Errorf("%s %q: %w", o.op, o.key, err)
	}
	return nil
}

// check rejects a malformed Txn. Propose runs it to answer early, and apply
// runs it again because the log entry is what counts.
func (t Txn) check() error {
	if len(t.Guards) > maxTxnGuards {
		return fmt.Errorf("%d guards, more than %d", len(t.Guards), maxTxnGuards)
	}
	if len(t.Ops) > MaxTxnOps {
		return fmt.Errorf("%d ops, more than %d", len(t.Ops), MaxTxnOps)
	}
	for i, g := range t.Guards {
		if err := g.check(); err != nil {
			return fmt.Errorf("guard %d: %w", i, err)
		}
	}
	seen := make(map[string]int, len(t.Ops))
	for i, o := range t.Ops {
		if err := o.check(); err != nil {
			return fmt.Errorf("op %d: %w", i, err)
		}
		if j, dup := seen[o.key]; dup {
			return fmt.Errorf("op %d: %s %s: key already written by op %d", i, o.op, o.key, j)
		}
		seen[o.key] = i
	}
	return nil
}

// subject names a Txn in errors: its first op's key, else its first guard's.
func (t Txn) subject() string {
	switch {
	case len(t.Ops) > 0:
		return t.Ops[0].key
	case len(t.Guards) > 0:
		return t.Guards[0].key
	}
	return "(empty)"
}

// GuardError says which guard of a Txn failed and what the store found
// instead. It wraps ErrGuardFailed; get it with errors.As.
type GuardError struct {
	Index int   // position of the guard in Txn.Guards
	Guard Guard // the guard that failed
	// Found is the key the store found that broke the guard (the guard's
	// own key, or for IfNoneUnder the first key under the prefix) and
	// FoundRevision its ModRevision; both are empty when the key is absent.
	Found         string
	FoundRevision uint64
}

func (e *GuardError) Error() string {
	var why string
	switch {
	case e.Found == "":
		why = "key absent"
	case e.Guard.kind == guardNoneUnder:
		why = fmt.Sprintf("found %s at rv %d", e.Found, e.FoundRevision)
	default:
		why = fmt.Sprintf("key present at rv %d", e.FoundRevision)
	}
	return fmt.Sprintf("%s: guard %d (%s): %s", ErrGuardFailed, e.Index, e.Guard, why)
}

func (e *GuardError) Unwrap() error { return ErrGuardFailed }

// OpError says which op of a Txn failed its own precondition (the first
// that did, in op order). It wraps the op's error (ErrNotFound,
// ErrAlreadyExists, ErrConflict); get it with errors.As, so that a caller
// batching independent writes can drop that op and propose the rest again.
type OpError struct {
	Index int    // position of the op in Txn.Ops
	Key   string // the op's key
	Err   error
}

func (e *OpError) Error() string { return fmt.Sprintf("op %d: %v", e.Index, e.Err) }

func (e *OpError) Unwrap() error { return e.Err }

// Txn proposes t as one Raft log entry and returns its result. If a guard
// fails, nothing is written and the error wraps ErrGuardFailed with a
// *GuardError naming the first guard that failed. If an op's own
// precondition fails, nothing is written and the error wraps ErrNotFound,
// ErrAlreadyExists or ErrConflict, as the single-key methods do, with an
// *OpError naming the op. Either way the entry takes a Raft index, so Revision advances, but no
// object changes and no event is recorded.
//
// As for Create, a Txn refused before it is proposed did not happen
// (ErrNotLeader, ErrClosed, ctx's error); one proposed and then cut off
// fails with ErrOutcomeUnknown: it may or may not have happened.
func (s *Store) Txn(ctx context.Context, t Txn) (TxnResult, error) {
	if err := t.check(); err != nil {
		return TxnResult{}, fmt.Errorf("txn %s: %w", t.subject(), err)
	}
	res, err := s.apply(ctx, "txn", t.subject(), marshalTxn(t))
	if err != nil {
		return TxnResult{}, err
	}
	return res.txn, res.err
}

// Check evaluates guards against this server's state without writing, as
// a Txn would check them: nil if all hold, else the error Txn would return
// for the first that fails. It is a read, for dry runs: the state may
// change (and on a follower lag) before any later write, so a write must
// carry its guards in a Txn.
func (s *Store) Check(ctx context.Context, guards []Guard) error {
	t := Txn{Guards: guards}
	if err := t.check(); err != nil {
		return fmt.Errorf("check %s: %w", t.subject(), err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("check %s: %w", t.subject(), err)
	}
	err := s.fsm.checkGuards(guards)
	var ge *GuardError
	if err != nil && !errors.As(err, &ge) {
		return dbErr("check", t.subject(), err)
	}
	return err
}
