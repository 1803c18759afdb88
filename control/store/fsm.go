package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
	bberrors "go.etcd.io/bbolt/errors"
)

// Buckets of the state database.
var (
	bucketKV     = []byte("kv")     // key -> kvRecord
	bucketEvents = []byte("events") // historyKey(rev, seq) -> event, the watch history
	bucketMeta   = []byte("meta")   // the keys below -> big-endian uint64

	keyApplied    = []byte("applied")    // last applied Raft command index
	keyCompacted  = []byte("compacted")  // highest revision trimmed from history
	keyEventCount = []byte("eventCount") // events in the history bucket
)

// maxKeyLen bounds keys (bbolt's own limit is 32 KiB).
const maxKeyLen = 4096

// fsm is the Raft state machine: the objects, their revisions and the bounded
// event history, all in one bbolt database. Apply is a pure function of the
// log entry and the database: no clocks, no randomness, no network.
//
// Threading contract: raft calls Apply, ApplyBatch, Snapshot and Restore from
// its single FSM goroutine (and Restore from NewRaft before that goroutine
// starts), so they do not lock against each other. The readers (get, list,
// compacted, history, checkGuards) run on any goroutine; mu guards the db
// pointer, which only Restore replaces. A storage failure is recorded in
// fails on the FSM goroutine (it never blocks); from then on the FSM
// applies nothing and the readers refuse, on any goroutine.
type fsm struct {
	path         string
	historyLimit uint64
	log          *slog.Logger
	hub          *hub
	hook         func(index uint64) error // Config.ApplyHookForTesting

	mu sync.RWMutex
	db *bbolt.DB

	applied atomic.Uint64 // last applied command index, mirrors meta/applied
	fails   *failStop     // the first storage failure; once set, nothing more is applied
}

// applyResult is what ApplyFuture.Response returns for a command.
type applyResult struct {
	kv  KV        // a single-key command's object
	txn TxnResult // a Txn's result
	err error
}

func openFSM(path string, historyLimit uint64, log *slog.Logger, h *hub) (*fsm, error) {
	db, applied, err := openStateDB(path)
	if err != nil {
		return nil, err
	}
	f := &fsm{path: path, historyLimit: historyLimit, log: log, hub: h, db: db, fails: newFailStop()}
	f.applied.Store(applied)
	return f, nil
}

// openStateDB opens a state database. Its commits are not synced to disk
// (bbolt's NoSync): the Raft log is what is durable, and state.db is
// rebuilt from the latest Raft snapshot and the log after a run that did
// not end cleanly (see prepareStateDB). So a write costs one fsync, of the
// Raft log, as in etcd.
func openStateDB(path string) (*bbolt.DB, uint64, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second, NoSync: true})
	if errors.Is(err, bberrors.ErrTimeout) {
		return nil, 0, fmt.Errorf("open %s: locked by another process (is another skiff server using this directory?): %w", path, err)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open %s: %w", path, err)
	}
	var applied uint64
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketKV, bucketEvents, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		applied = getUint64(tx.Bucket(bucketMeta).Get(keyApplied))
		return nil
	})
	if err != nil {
		db.Close()
		return nil, 0, fmt.Errorf("init %s: %w", path, err)
	}
	return db, applied, nil
}

// close syncs state.db and closes it, and, when the state machine has not
// failed, marks it clean so that the next start keeps it.
func (f *fsm) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fails.cause() != nil {
		return f.db.Close()
	}
	if err := f.db.Sync(); err != nil {
		f.db.Close()
		return fmt.Errorf("sync %s: %w", f.path, err)
	}
	if err := f.db.Close(); err != nil {
		return err
	}
	return markClean(f.path)
}

// cleanSuffix names the file whose presence says that state.db was synced
// and closed by the last run.
const cleanSuffix = ".clean"

func markClean(path string) error {
	fh, err := os.OpenFile(path+cleanSuffix, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := errors.Join(fh.Sync(), fh.Close()); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// prepareStateDB readies state.db at path for a run, before it is opened.
// A state.db that the last run closed cleanly is kept; its mark is removed
// (durably) first, since this run's commits are not synced. One that was
// not closed cleanly (a crash, a power loss, a storage failure) may have
// lost its last commits or be torn: when a Raft log is there to rebuild it
// from, it is removed, and Raft restores the latest snapshot into an empty
// state machine and replays the log after it. It reports whether it
// removed one.
func prepareStateDB(path string, haveLog bool) (rebuilt bool, err error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	switch _, err := os.Stat(path + cleanSuffix); {
	case err == nil:
		if err := os.Remove(path + cleanSuffix); err != nil {
			return false, err
		}
		return false, syncDir(filepath.Dir(path))
	case !errors.Is(err, os.ErrNotExist):
		return false, err
	case !haveLog:
		return false, nil // nothing to rebuild from: Open refuses it
	}
	if err := os.Remove(path); err != nil {
		return false, err
	}
	return true, syncDir(filepath.Dir(path))
}

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch implements raft.BatchingFSM: the commands of a batch are applied
// in one bbolt transaction, together with the new applied index, so a batch
// is all-or-nothing on disk. Entries at or below the stored applied index were
// applied before a restart and are skipped: raft replays the log from its last
// snapshot, and state.db already holds their effects.
//
// Command errors (not found, exists, conflict) are results, not failures. A
// failed bbolt write is a storage failure: the batch is rolled back, the
// failure recorded in fails, and the FSM stops applying (every command of
// this batch and later ones gets the *storageFailure, snapshots fail so raft
// keeps the log) while the Store stops Raft (fail-stop). A restart replays
// the log onto the last state committed to state.db.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	res := make([]any, len(logs))
	applied := f.applied.Load()
	pending := false
	for _, l := range logs {
		if l.Type == raft.LogCommand && l.Index > applied {
			pending = true
			break
		}
	}
	if !pending {
		return res
	}
	if err := f.fails.cause(); err != nil {
		return failAll(res, logs, err)
	}

	var events []Event
	last, at := applied, applied // at: the entry being applied
	err := f.db.Update(func(tx *bbolt.Tx) error {
		events, last = events[:0], applied
		a := newApplier(tx)
		for i, l := range logs {
			if l.Type != raft.LogCommand || l.Index <= applied {
				continue
			}
			at = l.Index
			if f.hook != nil {
				if err := f.hook(l.Index); err != nil {
					return err
				}
			}
			r, evs, err := a.apply(l.Index, l.Data)
			if err != nil {
				return err
			}
			res[i] = r
			for seq, ev := range evs {
				if err := a.record(ev, uint32(seq)); err != nil {
					return err
				}
			}
			events = append(events, evs...)
			last = l.Index
		}
		return a.finish(last, f.historyLimit)
	})
	if err != nil {
		ferr := &storageFailure{dir: filepath.Dir(f.path), index: at, what: "state.db write failed", err: err}
		f.fails.fail(ferr)
		f.log.Error("store: apply failed; state.db holds up to the previous index", "rv", at, "applied", applied, "err", err)
		return failAll(res, logs, f.fails.cause())
	}
	f.applied.Store(last)
	f.hub.publish(events)
	f.hub.applied()
	return res
}

func failAll(res []any, logs []*raft.Log, err error) []any {
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			res[i] = applyResult{err: err}
		}
	}
	return res
}

// applier applies commands inside one write transaction.
type applier struct {
	kv, events, meta *bbolt.Bucket
	count, compacted uint64
}

func newApplier(tx *bbolt.Tx) *applier {
	a := &applier{
		kv:     tx.Bucket(bucketKV),
		events: tx.Bucket(bucketEvents),
		meta:   tx.Bucket(bucketMeta),
	}
	a.count = getUint64(a.meta.Get(keyEventCount))
	a.compacted = getUint64(a.meta.Get(keyCompacted))
	return a
}

// apply runs one command at index. It returns the command's result, the
// events it produced (none if it failed; several, in op order, for a Txn)
// and a storage error, which aborts the batch.
func (a *applier) apply(index uint64, data []byte) (applyResult, []Event, error) {
	if len(data) > 0 && op(data[0]) == opTxn {
		return a.applyTxn(index, data)
	}
	c, err := unmarshalCommand(data)
	if err != nil {
		return applyResult{err: err}, nil, nil
	}
	o := Op(c)
	if err := o.check(); err != nil {
		return applyResult{err: fmt.Errorf("apply index %d: %w", index, err)}, nil, nil
	}
	cur, fail, err := a.prepare(o)
	if err != nil || fail != nil {
		return applyResult{err: fail}, nil, err
	}
	kv, ev, err := a.write(index, o, cur)
	if err != nil {
		return applyResult{}, nil, err
	}
	return applyResult{kv: kv}, []Event{ev}, nil
}

// applyTxn runs a Txn at index: guards first, then every op's own
// precondition, and only when all hold the writes. Ops are on distinct keys
// (Txn.check), so each op's precondition depends on the state before the
// Txn alone and nothing is written unless everything holds.
func (a *applier) applyTxn(index uint64, data []byte) (applyResult, []Event, error) {
	t, err := unmarshalTxn(data)
	if err == nil {
		err = t.check()
	}
	if err != nil {
		return applyResult{err: fmt.Errorf("apply index %d: %w", index, err)}, nil, nil
	}
	fail := func(err error) (applyResult, []Event, error) {
		return applyResult{err: fmt.Errorf("txn %s: %w", t.subject(), err)}, nil, nil
	}
	if err := checkGuards(a.kv, t.Guards); err != nil {
		var ge *GuardError
		if errors.As(err, &ge) {
			return fail(err)
		}
		return applyResult{}, nil, err
	}
	curs := make([]KV, len(t.Ops))
	for i, o := range t.Ops {
		cur, bad, err := a.prepare(o)
		if err != nil {
			return applyResult{}, nil, err
		}
		if bad != nil {
			return fail(&OpError{Index: i, Key: o.key, Err: bad})
		}
		curs[i] = cur
	}
	res := TxnResult{Revision: index, KVs: make([]KV, len(t.Ops))}
	evs := make([]Event, len(t.Ops))
	for i, o := range t.Ops {
		if res.KVs[i], evs[i], err = a.write(index, o, curs[i]); err != nil {
			return applyResult{}, nil, err
		}
	}
	return applyResult{txn: res}, evs, nil
}

// prepare checks o's own precondition against the current state. It
// returns the key's current object (zero for a create), fail when the
// precondition does not hold (ErrAlreadyExists, ErrNotFound, ErrConflict:
// the command's result) and err for a storage failure.
func (a *applier) prepare(o Op) (cur KV, fail, err error) {
	cur, found, err := a.get(o.key)
	if err != nil {
		return KV{}, nil, err
	}
	switch {
	case o.op == opCreate && found:
		return KV{}, fmt.Errorf("create %s: %w", o.key, ErrAlreadyExists), nil
	case o.op == opCreate:
		return KV{}, nil, nil
	case !found:
		return KV{}, fmt.Errorf("%s %s: %w", o.op, o.key, ErrNotFound), nil
	case o.rev != 0 && o.rev != cur.ModRevision:
		return KV{}, fmt.Errorf("%s %s: %w: have rv %d, want %d", o.op, o.key, ErrConflict, cur.ModRevision, o.rev), nil
	}
	return cur, nil, nil
}

// write makes the change of o, whose precondition prepare checked, at
// index over cur, and returns the object as the caller sees it and the
// event.
func (a *applier) write(index uint64, o Op, cur KV) (KV, Event, error) {
	switch o.op {
	case opCreate:
		kv := KV{Key: o.key, Value: o.value, CreateRevision: index, ModRevision: index}
		if err := a.kv.Put([]byte(o.key), marshalKVRecord(kv)); err != nil {
			return KV{}, Event{}, err
		}
		return kv, Event{Type: EventPut, KV: kv, Revision: index}, nil
	case opDelete:
		if err := a.kv.Delete([]byte(o.key)); err != nil {
			return KV{}, Event{}, err
		}
		prev, kv := cur, cur
		kv.ModRevision = index
		return kv, Event{Type: EventDelete, KV: kv, PrevKV: &prev, Revision: index}, nil
	}
	prev := cur
	kv := KV{Key: o.key, Value: o.value, CreateRevision: cur.CreateRevision, ModRevision: index}
	if err := a.kv.Put([]byte(o.key), marshalKVRecord(kv)); err != nil {
		return KV{}, Event{}, err
	}
	return kv, Event{Type: EventPut, KV: kv, PrevKV: &prev, Revision: index}, nil
}

func (a *applier) get(key string) (KV, bool, error) {
	v := a.kv.Get([]byte(key))
	if v == nil {
		return KV{}, false, nil
	}
	kv, err := unmarshalKVRecord(key, v)
	return kv, err == nil, err
}

// checkGuards evaluates guards in order against the kv bucket: nil if all
// hold, a *GuardError for the first that fails, or a storage error.
func checkGuards(kv *bbolt.Bucket, guards []Guard) error {
	for i, g := range guards {
		found, rev, err := guardFinds(kv, g)
		if err != nil {
			return err
		}
		var ok bool
		switch g.kind {
		case guardModRevision:
			ok = found != "" && rev == g.rev
		case guardPresent:
			ok = found != ""
		case guardAbsent, guardNoneUnder:
			ok = found == ""
		}
		if !ok {
			return &GuardError{Index: i, Guard: g, Found: found, FoundRevision: rev}
		}
	}
	return nil
}

// guardFinds looks up what g is about: its key, or the first key under its
// prefix. found is "" when there is none.
func guardFinds(kv *bbolt.Bucket, g Guard) (found string, rev uint64, err error) {
	k, v := []byte(g.key), kv.Get([]byte(g.key))
	if g.kind == guardNoneUnder {
		k, v = kv.Cursor().Seek(k)
		if k == nil || !bytes.HasPrefix(k, []byte(g.key)) {
			return "", 0, nil
		}
	}
	if v == nil {
		return "", 0, nil
	}
	rev, err = recordModRevision(v)
	if err != nil {
		return "", 0, fmt.Errorf("decode %s: %w", k, err)
	}
	return string(k), rev, nil
}

// record appends ev, the event number seq of its revision, to the watch
// history.
func (a *applier) record(ev Event, seq uint32) error {
	if err := a.events.Put(historyKey(ev.Revision, seq), marshalEvent(ev)); err != nil {
		return err
	}
	a.count++
	return nil
}

// finish stores the applied index and trims the history to at most its
// newest limit events, oldest first and whole revisions at a time, so that
// a revision's events are either all kept or all gone. Deterministic: it
// depends only on the database.
func (a *applier) finish(applied, limit uint64) error {
	if a.count > limit {
		c := a.events.Cursor()
		k, _ := c.First()
		for a.count > limit && k != nil {
			rev := revOf(k)
			for ; k != nil && revOf(k) == rev; k, _ = c.First() {
				if err := c.Delete(); err != nil {
					return err
				}
				a.count--
			}
			a.compacted = rev
		}
		if k == nil {
			a.count = 0
		}
	}
	for _, kv := range []struct {
		k []byte
		v uint64
	}{{keyApplied, applied}, {keyEventCount, a.count}, {keyCompacted, a.compacted}} {
		if err := a.meta.Put(kv.k, putUint64(kv.v)); err != nil {
			return err
		}
	}
	return nil
}

func checkKey(key string) error {
	switch {
	case key == "":
		return errors.New("empty key")
	case len(key) > maxKeyLen:
		return fmt.Errorf("key longer than %d bytes", maxKeyLen)
	}
	return nil
}

// view runs fn in a read transaction of the current database. After a
// storage failure it refuses with ErrClosed and the failure: the state
// no longer follows the log.
func (f *fsm) view(fn func(tx *bbolt.Tx) error) error {
	if err := f.fails.cause(); err != nil {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.db.View(fn)
}

// checkGuards evaluates guards against the current state, as a Txn would.
func (f *fsm) checkGuards(guards []Guard) error {
	return f.view(func(tx *bbolt.Tx) error { return checkGuards(tx.Bucket(bucketKV), guards) })
}

func (f *fsm) get(key string) (KV, bool, error) {
	var (
		kv    KV
		found bool
	)
	err := f.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketKV).Get([]byte(key))
		if v == nil {
			return nil
		}
		var err error
		kv, err = unmarshalKVRecord(key, v)
		found = err == nil
		return err
	})
	return kv, found, err
}

// list returns the objects under prefix in key order and the applied index
// they are consistent with.
func (f *fsm) list(prefix string) ([]KV, uint64, error) {
	var (
		kvs []KV
		rev uint64
	)
	err := f.view(func(tx *bbolt.Tx) error {
		rev = getUint64(tx.Bucket(bucketMeta).Get(keyApplied))
		p := []byte(prefix)
		c := tx.Bucket(bucketKV).Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			kv, err := unmarshalKVRecord(string(k), v)
			if err != nil {
				return err
			}
			kvs = append(kvs, kv)
		}
		return nil
	})
	return kvs, rev, err
}

// compacted returns the highest revision trimmed from the history: a watch
// can resume from any revision at or above it.
func (f *fsm) compacted() (uint64, error) {
	var rev uint64
	err := f.view(func(tx *bbolt.Tx) error {
		rev = getUint64(tx.Bucket(bucketMeta).Get(keyCompacted))
		return nil
	})
	return rev, err
}

// history returns the recorded events with after < Revision <= upto whose key
// has prefix, scanning about max events so the read transaction stays short:
// it stops only between revisions, so a page holds all of a revision's
// events or none. next is the revision to continue after (upto once the
// range is exhausted). It fails with ErrExpired if events after `after`
// have been trimmed.
func (f *fsm) history(prefix string, after, upto uint64, max int) (evs []Event, next uint64, err error) {
	next = after
	err = f.view(func(tx *bbolt.Tx) error {
		if comp := getUint64(tx.Bucket(bucketMeta).Get(keyCompacted)); after < comp {
			return fmt.Errorf("%w: resourceVersion %d is too old (oldest is %d), list again", ErrExpired, after, comp)
		}
		c := tx.Bucket(bucketEvents).Cursor()
		scanned := 0
		for k, v := c.Seek(revKey(after + 1)); k != nil; k, v = c.Next() {
			rev := revOf(k)
			if rev > upto {
				break
			}
			if scanned >= max && rev != next {
				return nil // next's events are all scanned
			}
			scanned++
			next = rev
			key, err := eventKey(v)
			if err != nil {
				return err
			}
			if !bytes.HasPrefix([]byte(key), []byte(prefix)) {
				continue
			}
			ev, err := unmarshalEvent(v)
			if err != nil {
				return err
			}
			evs = append(evs, ev)
		}
		next = upto
		return nil
	})
	return evs, next, err
}

// snapshotMagic starts every snapshot, followed by the big-endian applied
// index and then the bbolt database file.
const snapshotMagic = "skiffst1"

// Snapshot implements raft.FSM. It opens a read transaction; Persist streams
// a consistent copy of the database from it while Apply carries on.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.fails.cause(); err != nil {
		return nil, err
	}
	tx, err := f.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return &fsmSnapshot{tx: tx, applied: getUint64(tx.Bucket(bucketMeta).Get(keyApplied))}, nil
}

type fsmSnapshot struct {
	tx      *bbolt.Tx
	applied uint64
}

// Persist implements raft.FSMSnapshot.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	hdr := append([]byte(snapshotMagic), putUint64(s.applied)...)
	_, err := sink.Write(hdr)
	if err == nil {
		_, err = s.tx.WriteTo(sink)
	}
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot at rv %d: %w", s.applied, err)
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot.
func (s *fsmSnapshot) Release() { s.tx.Rollback() }

// Restore implements raft.FSM: it replaces state.db with the snapshot's copy.
// A snapshot no newer than what state.db already holds is skipped: state.db
// is then the snapshot plus committed entries after it, which raft is about
// to replay and ApplyBatch will skip. That is the normal restart path, so a
// restart does not copy the whole database. Watches are closed on a real
// restore (their consumers re-list).
func (f *fsm) Restore(rc io.ReadCloser) error {
	hdr := make([]byte, len(snapshotMagic)+8)
	if _, err := io.ReadFull(rc, hdr); err != nil {
		return fmt.Errorf("restore snapshot: read header: %w", err)
	}
	if string(hdr[:len(snapshotMagic)]) != snapshotMagic {
		return errors.New("restore snapshot: not a skiff store snapshot")
	}
	snapRev := getUint64(hdr[len(snapshotMagic):])
	if err := f.fails.cause(); err != nil {
		return err
	}
	if cur := f.applied.Load(); snapRev <= cur {
		f.log.Debug("store: state.db already includes snapshot, not restoring", "rv", snapRev, "applied", cur)
		return nil
	}

	tmp := f.path + ".restore"
	if err := writeFileSync(tmp, rc); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore snapshot at rv %d: %w", snapRev, err)
	}

	if err := checkSnapshotDB(tmp, snapRev); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore snapshot at rv %d: %w", snapRev, err)
	}

	f.mu.Lock()
	db, applied, err := f.swapDB(tmp)
	if err == nil {
		f.db = db
	}
	f.mu.Unlock()
	if err != nil {
		// The live database is closed or replaced by one that did not
		// open: a storage failure.
		f.fails.fail(&storageFailure{dir: filepath.Dir(f.path), index: snapRev, what: "restore snapshot", err: err})
		return f.fails.cause()
	}
	f.applied.Store(applied)
	f.hub.reset(applied)
	f.log.Info("store: restored snapshot", "rv", applied)
	return nil
}

// checkSnapshotDB opens the database copied out of a snapshot and checks it
// is a state database at the revision the snapshot header announced, before
// it replaces the live one.
func checkSnapshotDB(path string, rev uint64) error {
	db, applied, err := openStateDB(path)
	if err != nil {
		return err
	}
	if err := db.Close(); err != nil {
		return err
	}
	if applied != rev {
		return fmt.Errorf("snapshot database is at rv %d, header says %d", applied, rev)
	}
	return nil
}

// swapDB closes the live database, moves tmp over it and opens it. Called
// with mu held.
func (f *fsm) swapDB(tmp string) (*bbolt.DB, uint64, error) {
	if err := f.db.Close(); err != nil {
		return nil, 0, err
	}
	if err := os.Rename(tmp, f.path); err != nil {
		return nil, 0, err
	}
	if err := syncDir(filepath.Dir(f.path)); err != nil {
		return nil, 0, err
	}
	return openStateDB(f.path)
}

func writeFileSync(path string, r io.Reader) error {
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(fh, r); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
