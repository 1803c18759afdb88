// Package store is skiff's replicated key/value store: the control plane's
// only state. It owns the Raft log (hashicorp/raft, raft-boltdb), the state
// machine that keeps objects in bbolt, revisions, the watch history and hub,
// and snapshots.
//
// Values are opaque bytes (the apiserver stores protobuf); keys are strings
// such as "/pods/default/hello" and prefixes such as "/pods/" select ranges.
// Every change is a Raft log entry and its revision is that entry's index, so
// an object's ModRevision is the index of the entry that last changed it.
// Update and Delete are compare-and-swap on ModRevision, checked inside the
// state machine. A Txn writes several keys at one revision, all or nothing,
// under guards (a key's revision, presence or absence, an empty prefix)
// checked in the same log entry.
//
// The store knows nothing of pods, validation or authorization: those belong
// to the apiserver, its only user. Adding voters and forwarding writes to the
// leader belong to control/cluster; here a write on a follower fails with
// ErrNotLeader.
//
// Files in Config.Dir: raft.db (Raft log and stable store), state.db (the
// state machine), snapshots/ (Raft snapshots of state.db). Store.Snapshot
// and RestoreSnapshot copy the state machine out of one cluster and into a
// new one, as snapshot files (see snapshot_save.go).
package store

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// Config configures Open.
type Config struct {
	Dir      string // data directory, created if missing
	BindAddr string // Raft TCP bind address; default "127.0.0.1:0" (port 0 = pick one)
	// AdvertiseAddr is the Raft address other servers dial; BindAddr's
	// when empty (which must then not be a wildcard).
	AdvertiseAddr string
	// Listener, when set, is the Raft transport's listener, opened by the
	// caller (BindAddr is then ignored); Open takes it over.
	Listener net.Listener
	// Cluster says the server is one of several. A new directory is then
	// not bootstrapped as a cluster of its own: it waits for Bootstrap or
	// for a leader to add it (AddVoter), and its cluster ID stays empty
	// until Bootstrap or AdoptCluster gives it one. Open does not wait for
	// a leader either: until one is elected, writes fail with ErrNotLeader.
	Cluster bool
	// NoWait makes Open return once Raft runs, without waiting for a
	// leader; WaitReady waits later.
	NoWait bool
	// ServerID is the Raft server ID. Empty: the one the directory keeps,
	// or a new one for a new directory. Given, it must match the kept one.
	ServerID string
	// ClusterID, when given, is the cluster the directory must belong to:
	// a directory of another cluster is refused. A new directory takes it.
	ClusterID string
	Logger    *slog.Logger // nil = discard; Raft's own INFO chatter is logged at DEBUG

	// TLS and Peer run the Raft transport over mutual TLS; production
	// servers always set both. Nil, both: plain TCP, which anyone who
	// reaches the Raft port can append to the log through (tests of other
	// features, a single dev server on loopback).
	//
	// TLS serves both ends, built by the caller from the cluster CA: it
	// needs this server's certificate (Certificates, or GetCertificate and
	// GetClientCertificate), ClientCAs and RootCAs. Accepting, the client's
	// certificate is required and verified against ClientCAs (ClientAuth is
	// forced to RequireAndVerifyClientCert). Dialing, the server's chain is
	// verified against RootCAs; host names are checked only if ServerName
	// is set (servers are dialed by address and named by Peer instead).
	TLS *tls.Config
	// Peer maps the verified certificate of the server at the other end
	// of a Raft connection (cs.VerifiedChains[0][0], also
	// cs.PeerCertificates[0]) to its Raft server ID; an error refuses the
	// connection. It is called once per connection, from several
	// goroutines. A connection is kept only with a server of the latest
	// Raft configuration (any server, while this server's configuration is
	// empty: a new server accepts the leader that adds it), and a dial
	// only if the server answering is the one the configuration puts at
	// that address.
	Peer func(cs tls.ConnectionState) (serverID string, err error)

	// Tuning for tests; zero = default.
	historyLimit      uint64        // events kept for Watch (defaultHistoryLimit)
	watchBuffer       int           // per-watcher queue (defaultWatchBuffer)
	snapshotThreshold uint64        // raft SnapshotThreshold (snapshotThreshold)
	trailingLogs      uint64        // raft TrailingLogs (trailingLogs)
	snapshotInterval  time.Duration // raft SnapshotInterval (snapshotInterval)

	// ApplyHookForTesting is for tests only; leave it nil. It is called on
	// raft's FSM goroutine inside the state.db write transaction, before
	// each command at index is applied. A non-nil error fails that write as
	// a full or broken disk would, which stops the store (see Failed). It
	// may block, to hold the state machine at index.
	ApplyHookForTesting func(index uint64) error
	// LogWriteHookForTesting is for tests only; leave it nil. It is called
	// before every write to raft.db; an error it returns is the write's
	// (a failing disk under the Raft log).
	LogWriteHookForTesting func() error
	// NetworkHookForTesting is for tests only; leave it nil. It is called
	// before every dial, accept, read and write of the Raft transport; while
	// it returns an error, this server is cut off from its peers, as by a
	// network partition.
	NetworkHookForTesting func() error
}

// KV is one object. ModRevision is the Raft index of the entry that last
// changed it, CreateRevision that of the entry that created it.
type KV struct {
	Key            string
	Value          []byte
	CreateRevision uint64
	ModRevision    uint64
}

// EventType says what an Event did.
type EventType int

const (
	EventPut    EventType = iota + 1 // create or update
	EventDelete                      // delete
	// EventProgress changes nothing and has no KV: every event under the
	// watch's prefix with a revision at or below Revision has been sent.
	// Only a watch opened WithProgress gets it.
	EventProgress
)

func (t EventType) String() string {
	switch t {
	case EventPut:
		return "PUT"
	case EventDelete:
		return "DELETE"
	case EventProgress:
		return "PROGRESS"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// Event is one change seen by Watch. For a put, KV is the new object and
// PrevKV the old one (nil on create). For a delete, KV holds the last value
// with ModRevision set to the delete's revision, and PrevKV the object as it
// was. Revision equals KV.ModRevision.
type Event struct {
	Type     EventType
	KV       KV
	PrevKV   *KV
	Revision uint64
}

// Store is the replicated store. Its methods are safe for concurrent use.
type Store struct {
	idMu        sync.Mutex // guards id.ClusterID, which AdoptCluster and Bootstrap set once
	id          identity
	dir         string
	log         *slog.Logger
	raft        *raft.Raft
	trans       *raft.NetworkTransport
	cluster     bool
	reads       readGate // open while this server leads with every earlier term's entry applied
	logs        *logStore
	fsm         *fsm
	hub         *hub
	leader      leaderFeed
	watchBuffer int

	done      chan struct{} // closed by Close
	failed    chan struct{} // closed by stopOnFailure once Raft is stopped after a storage failure
	bg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Defaults of Config.BindAddr and Config.ServerID.
const (
	defaultBindAddr = "127.0.0.1:0"
	defaultServerID = "skiff-0"
)

// Raft timing: one server on a laptop or CI box, up to three on a LAN. A
// fresh single server elects itself within one to two heartbeat timeouts.
// A leader steps down when it has not heard from a quorum for the lease:
// at 100 ms, three servers sharing two busy cores (placing 50,000 pods)
// lost their leader again and again and never finished; at 500 ms they
// do, and a failover still takes about a second.
const (
	heartbeatTimeout   = 500 * time.Millisecond
	electionTimeout    = 500 * time.Millisecond
	leaderLeaseTimeout = 500 * time.Millisecond
	transportTimeout   = 10 * time.Second
	snapshotsRetained  = 2
)

// Snapshots and log truncation keep the disk bounded under churn. Every
// snapshotInterval (plus up to as much again, at random) raft checks
// whether snapshotThreshold entries were appended since the last snapshot;
// if so it snapshots state.db into snapshots/ (keeping snapshotsRetained)
// and deletes the log before it but the last trailingLogs entries. raft.db
// then holds about trailingLogs+snapshotThreshold entries plus two
// intervals' writes at most; bbolt reuses the freed pages, so the file
// stops growing. A snapshot copies all of state.db (a control plane's
// objects: megabytes), so the threshold stays raft's default; the interval
// is a quarter of raft's 120s, so that a burst of writes is truncated
// within a minute. A follower fewer than trailingLogs entries behind
// catches up from the log rather than by receiving a snapshot.
const (
	snapshotThreshold = 8192
	trailingLogs      = 10240
	snapshotInterval  = 30 * time.Second
)

// Open opens the store in cfg.Dir, creating it if needed. On a fresh
// directory it bootstraps a single-server cluster, unless cfg.Cluster. It
// returns once a leader is known (for a single server: this one) and, on
// the leader, once every committed entry is applied; ctx bounds that wait.
// With cfg.Cluster it returns once Raft runs, leader or not. Reopening a
// directory keeps all data, revisions and watch history.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("open store: Config.Dir is empty")
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = defaultBindAddr
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.historyLimit == 0 {
		cfg.historyLimit = defaultHistoryLimit
	}
	if cfg.watchBuffer == 0 {
		cfg.watchBuffer = defaultWatchBuffer
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	id, err := resolveIdentity(cfg)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	cfg.ServerID, cfg.ClusterID = id.ServerID, id.ClusterID

	s := &Store{id: id, log: cfg.Logger, watchBuffer: cfg.watchBuffer, cluster: cfg.Cluster, dir: cfg.Dir, done: make(chan struct{}), failed: make(chan struct{})}
	if err := s.start(cfg); err != nil {
		s.closePartial()
		if cfg.Listener != nil {
			cfg.Listener.Close()
		}
		return nil, fmt.Errorf("open store %s: %w", cfg.Dir, err)
	}
	if cfg.Cluster || cfg.NoWait {
		return s, nil
	}
	if err := s.waitReady(ctx); err != nil {
		s.Close()
		if ferr := s.Err(); ferr != nil {
			return nil, fmt.Errorf("open store: %w", ferr)
		}
		return nil, fmt.Errorf("open store %s: wait for leader: %w", cfg.Dir, err)
	}
	return s, nil
}

// start opens the files and the transport and starts raft. On error the
// caller releases what was opened with closePartial.
func (s *Store) start(cfg Config) error {
	hlog := newRaftLogger(cfg.Logger)

	statePath := filepath.Join(cfg.Dir, "state.db")
	_, statErr := os.Stat(filepath.Join(cfg.Dir, "raft.db"))
	rebuilt, err := prepareStateDB(statePath, statErr == nil)
	if err != nil {
		return fmt.Errorf("prepare %s: %w", statePath, err)
	}
	if rebuilt {
		s.log.Warn("store: the last run did not close state.db cleanly; rebuilding it from the Raft snapshot and log", "dir", cfg.Dir)
	}
	s.fsm, err = openFSM(statePath, cfg.historyLimit, cfg.Logger, nil)
	if err != nil {
		return err
	}
	s.fsm.hook = cfg.ApplyHookForTesting
	s.hub = newHub(s.fsm.applied.Load(), cfg.Logger)
	s.fsm.hub = s.hub

	bolt, err := raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(cfg.Dir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: time.Second},
	})
	if err != nil {
		return fmt.Errorf("open raft.db: %w", err)
	}
	s.logs = &logStore{BoltStore: bolt, dir: cfg.Dir, fails: s.fsm.fails, hook: cfg.LogWriteHookForTesting}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, snapshotsRetained, hlog)
	if err != nil {
		return err
	}
	auth, err := newTLSAuth(cfg.TLS, cfg.Peer)
	if err != nil {
		return err
	}
	ln := cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.BindAddr); err != nil {
			return fmt.Errorf("raft transport on %s: %w", cfg.BindAddr, err)
		}
	}
	advertise, err := AdvertiseAddr(ln, cfg.AdvertiseAddr)
	if err != nil {
		ln.Close()
		return fmt.Errorf("raft transport: %w", err)
	}
	stream := newStreamLayer(ln, advertise, auth, cfg.NetworkHookForTesting, cfg.Logger)
	s.trans = raft.NewNetworkTransportWithLogger(stream, 3, transportTimeout, hlog)

	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(cfg.ServerID)
	conf.HeartbeatTimeout = heartbeatTimeout
	conf.ElectionTimeout = electionTimeout
	conf.LeaderLeaseTimeout = leaderLeaseTimeout
	conf.Logger = hlog
	conf.SnapshotThreshold = cmp.Or(cfg.snapshotThreshold, snapshotThreshold)
	conf.TrailingLogs = cmp.Or(cfg.trailingLogs, trailingLogs)
	conf.SnapshotInterval = cmp.Or(cfg.snapshotInterval, snapshotInterval)
	// Group commit: the leader appends every Apply waiting for it, up to
	// MaxAppendEntries+1, with one fsync of raft.db, and the FSM applies
	// them in one state.db transaction (ApplyBatch). BatchApplyCh queues
	// Apply in a buffer of MaxAppendEntries, so a caller hands its entry
	// over while the leader is busy with the previous batch. Raft's default
	// of 64 is above the batches seen at a control plane's concurrency (64
	// writers: about 30 entries per fsync, see BenchmarkCreateParallel). An
	// entry queued when ctx ends may still apply: apply reports that as
	// ErrOutcomeUnknown, as for any entry handed to raft.
	conf.BatchApplyCh = true

	// A directory seeded by RestoreSnapshot holds a Raft snapshot and no
	// log: existing state, so no bootstrap; NewRaft takes the snapshot's
	// configuration and continues after its index.
	existing, err := raft.HasExistingState(s.logs, s.logs, snaps)
	if err != nil {
		return err
	}
	if !existing && !cfg.Cluster {
		if rev := s.fsm.applied.Load(); rev != 0 {
			return fmt.Errorf("state.db is at rv %d but there is no raft log or snapshot: refusing to start", rev)
		}
		boot := raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter,
			ID:       conf.LocalID,
			Address:  s.trans.LocalAddr(),
		}}}
		if err := raft.BootstrapCluster(conf, s.logs, s.logs, snaps, s.trans, boot); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	s.raft, err = raft.NewRaft(conf, s.fsm, s.logs, s.logs, snaps, s.trans)
	if err != nil {
		return err
	}
	if auth != nil {
		stream.setRaft(s.raft)
	}
	s.reads.init()
	s.bg.Add(2)
	go s.followLeadership(s.raft.LeaderCh())
	go s.stopOnFailure()
	return nil
}

// WaitReady waits until a leader is known and, if it is this server,
// until every committed entry has been applied, as Open does unless
// Config.NoWait. Replaying the log can meet a storage failure: it returns
// Err then.
func (s *Store) WaitReady(ctx context.Context) error {
	if err := s.waitReady(ctx); err != nil {
		if ferr := s.Err(); ferr != nil {
			return fmt.Errorf("open store: %w", ferr)
		}
		return fmt.Errorf("open store %s: wait for leader: %w", s.dir, err)
	}
	return nil
}

func (s *Store) waitReady(ctx context.Context) error {
	if _, _, err := s.WaitLeader(ctx); err != nil {
		return err
	}
	if !s.IsLeader() {
		return s.Err()
	}
	if _, err := s.wait(ctx, s.raft.Barrier(timeoutOf(ctx))); err != nil {
		return err
	}
	// The barrier is answered after every entry before it went to the
	// state machine, so a failure applying them is recorded by now.
	return s.Err()
}

// Close shuts down raft and closes the files. Open watches are closed and
// LeaderCh channels closed. Safe to call more than once; later calls return
// the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		close(s.done)
		if err := s.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
		}
		s.bg.Wait()
		s.closePartial()
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// closePartial releases whatever start opened, in reverse order.
func (s *Store) closePartial() {
	if s.trans != nil {
		s.trans.Close()
	}
	if s.hub != nil {
		s.hub.close()
	}
	if s.logs != nil {
		if err := s.logs.Close(); err != nil {
			s.log.Warn("store: close raft.db", "err", err)
		}
	}
	if s.fsm != nil {
		if err := s.fsm.close(); err != nil {
			s.log.Warn("store: close state.db", "err", err)
		}
	}
}

// ServerID is this server's Raft ID, kept in its data directory.
func (s *Store) ServerID() string { return s.id.ServerID }

// ClusterID is the ID of the cluster the data directory belongs to; empty
// for a new server of a cluster (Config.Cluster) until Bootstrap or
// AdoptCluster sets it.
func (s *Store) ClusterID() string {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	return s.id.ClusterID
}

// Revision returns the store's revision: the index of the last applied Raft
// command (some commands, like a failed compare-and-swap, change nothing).
func (s *Store) Revision() uint64 {
	return s.fsm.applied.Load()
}

// Get returns the object at key, or ErrNotFound. It reads this server's
// state; on a follower the result may lag the leader slightly. After a
// storage failure it fails with ErrClosed (see Failed).
func (s *Store) Get(ctx context.Context, key string) (KV, error) {
	if err := ctx.Err(); err != nil {
		return KV{}, fmt.Errorf("get %s: %w", key, err)
	}
	kv, found, err := s.fsm.get(key)
	switch {
	case err != nil:
		return KV{}, dbErr("get", key, err)
	case !found:
		return KV{}, fmt.Errorf("get %s: %w", key, ErrNotFound)
	}
	return kv, nil
}

// List returns the objects whose key starts with prefix, sorted by key, and
// the revision they are consistent with: Watch(ctx, prefix, rev) continues
// exactly after the listing.
func (s *Store) List(ctx context.Context, prefix string) ([]KV, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", prefix, err)
	}
	kvs, rev, err := s.fsm.list(prefix)
	if err != nil {
		return nil, 0, dbErr("list", prefix, err)
	}
	return kvs, rev, nil
}

// Create stores value at key, which must not exist (ErrAlreadyExists), and
// returns the new object.
//
// For all writes: a write refused before it is proposed to Raft did not
// happen: it fails with ErrNotLeader on a follower, ErrClosed on a closed or
// failed store, or ctx's error. A write proposed and then cut off (ctx ends
// while waiting, leadership is lost, Raft shuts down, the state machine
// fails) fails with ErrOutcomeUnknown: it may or may not have happened, and
// may still apply.
func (s *Store) Create(ctx context.Context, key string, value []byte) (KV, error) {
	return s.propose(ctx, command{op: opCreate, key: key, value: value})
}

// Update replaces the value at key if rev equals its ModRevision (rev 0:
// unconditionally) and returns the new object. It fails with ErrNotFound or
// ErrConflict.
func (s *Store) Update(ctx context.Context, key string, value []byte, rev uint64) (KV, error) {
	return s.propose(ctx, command{op: opUpdate, key: key, value: value, rev: rev})
}

// Delete removes key if rev equals its ModRevision (rev 0: unconditionally).
// It returns the deleted object with ModRevision set to the delete's
// revision, as its DELETE event carries it. It fails with ErrNotFound or
// ErrConflict.
func (s *Store) Delete(ctx context.Context, key string, rev uint64) (KV, error) {
	return s.propose(ctx, command{op: opDelete, key: key, rev: rev})
}

// propose appends c to the Raft log and returns its result from the FSM.
func (s *Store) propose(ctx context.Context, c command) (KV, error) {
	if err := checkKey(c.key); err != nil {
		return KV{}, fmt.Errorf("%s %q: %w", c.op, c.key, err)
	}
	res, err := s.apply(ctx, c.op.String(), c.key, c.marshal())
	if err != nil {
		return KV{}, err
	}
	return res.kv, res.err
}

// apply appends an encoded command to the Raft log and returns the FSM's
// result; the error is about getting it applied (ctx, leadership, shutdown,
// storage), the command's own outcome is in the result. verb and key name
// the command in errors.
func (s *Store) apply(ctx context.Context, verb, key string, data []byte) (applyResult, error) {
	if err := ctx.Err(); err != nil {
		return applyResult{}, fmt.Errorf("%s %s: %w", verb, key, err)
	}
	if err := s.refuse(); err != nil {
		return applyResult{}, fmt.Errorf("%s %s: %w", verb, key, err)
	}
	f := s.raft.Apply(data, timeoutOf(ctx))
	answered, err := s.wait(ctx, f)
	switch {
	case !answered:
		// Apply took the entry; raft may have appended it or not.
		return applyResult{}, &OutcomeUnknownError{Verb: verb, Key: key, Err: err}
	case err != nil:
		// Index is set once the leader appended the entry to its log, and
		// may be read once Error has returned.
		return applyResult{}, raftErr(verb, key, err, f.Index() != 0)
	}
	res, ok := f.Response().(applyResult)
	if !ok {
		return applyResult{}, fmt.Errorf("%s %s: unexpected apply response %T", verb, key, f.Response())
	}
	var sf *storageFailure
	if errors.As(res.err, &sf) {
		// Committed, but this server's state machine could not apply it:
		// it will apply on a restart (or on the other servers) with a
		// result nobody has seen.
		return applyResult{}, &OutcomeUnknownError{Verb: verb, Key: key, Err: sf}
	}
	return res, nil
}

// wait waits for a raft future, for ctx or for this store to stop. answered
// says whether raft answered; err is then the future's error, else what
// ended the wait (ctx's error, the storage failure, the store closing).
// Raft futures cannot be cancelled: when the wait ends unanswered, the
// operation may still complete.
//
// The goroutine ends when raft answers. Raft does not answer an entry it
// committed but had not handed to the state machine when it shut down
// (hashicorp/raft#498); its goroutine then stays until the process exits,
// one per such write, only after this store stopped.
func (s *Store) wait(ctx context.Context, f raft.Future) (answered bool, err error) {
	errc := make(chan error, 1)
	go func() { errc <- f.Error() }()
	select {
	case err := <-errc:
		return true, err
	case <-ctx.Done():
		err = ctx.Err()
	case <-s.failed:
		err = s.Err()
	case <-s.done:
		err = errors.New("the store was closed while waiting")
	}
	select {
	case ferr := <-errc: // answered meanwhile: the answer wins
		return true, ferr
	default:
		return false, err
	}
}

// timeoutOf converts ctx's deadline to raft's enqueue timeout (0 = none).
func timeoutOf(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		if t := time.Until(d); t > 0 {
			return t
		}
		return time.Nanosecond
	}
	return 0
}

// RaftServer is one server of the Raft configuration.
type RaftServer struct {
	ID, Address string
	Voter       bool
	Leader      bool
}

// RaftServers returns the Raft configuration as this server knows it, with
// the leader marked.
func (s *Store) RaftServers() ([]RaftServer, error) {
	if err := s.refuse(); err != nil {
		return nil, err
	}
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft configuration: %w", err)
	}
	_, leader := s.raft.LeaderWithID()
	var out []RaftServer
	for _, srv := range f.Configuration().Servers {
		out = append(out, RaftServer{
			ID: string(srv.ID), Address: string(srv.Address),
			Voter: srv.Suffrage == raft.Voter, Leader: srv.ID == leader,
		})
	}
	return out, nil
}

// RaftAddr is the Raft address other servers dial to reach this one.
func (s *Store) RaftAddr() string { return string(s.trans.LocalAddr()) }
