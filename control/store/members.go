package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Membership: how a server of several (Config.Cluster) becomes part of a
// cluster, and how the leader changes who votes. Who is alive is not known
// here: control/cluster watches the gossip pool and calls these.

// Bootstrap starts a new cluster whose voters are servers, this one among
// them, as Nomad's and Consul's bootstrap-expect do: every server of the
// first set calls it with the same list, and Raft elects one of them. The
// cluster's ID is derived from the servers' IDs, so each computes the
// same. It fails on a directory that already holds Raft state or belongs
// to a cluster.
func (s *Store) Bootstrap(servers []RaftServer) error {
	if !s.cluster {
		return errors.New("bootstrap: this store bootstrapped itself as a cluster of one (Config.Cluster is false)")
	}
	var conf raft.Configuration
	ids := make([]string, 0, len(servers))
	self := false
	for _, srv := range servers {
		if srv.ID == "" || srv.Address == "" {
			return fmt.Errorf("bootstrap: server %q at %q: an ID and an address are required", srv.ID, srv.Address)
		}
		self = self || srv.ID == s.ServerID()
		ids = append(ids, srv.ID)
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(srv.ID), Address: raft.ServerAddress(srv.Address)})
	}
	if !self {
		return fmt.Errorf("bootstrap: this server (%s) is not among the servers given", s.ServerID())
	}
	sort.Strings(ids)
	sum := sha256.Sum256([]byte(strings.Join(ids, "\n")))
	if err := s.setClusterID("cluster-" + hex.EncodeToString(sum[:6])); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if err := s.raft.BootstrapCluster(conf).Error(); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	return nil
}

// AdoptCluster records that this new server joins cluster id, before a
// leader adds it. It fails when the directory belongs to another cluster.
func (s *Store) AdoptCluster(id string) error {
	if id == "" {
		return errors.New("adopt cluster: empty cluster ID")
	}
	return s.setClusterID(id)
}

// AddVoter makes the server id at address a voter, or updates its address;
// only the leader can. It returns once the new configuration is committed.
func (s *Store) AddVoter(ctx context.Context, id, address string) error {
	if err := s.refuse(); err != nil {
		return err
	}
	f := s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(address), 0, timeoutOf(ctx))
	if _, err := s.wait(ctx, f); err != nil {
		return fmt.Errorf("add voter %s at %s: %w", id, address, raftConfErr(err))
	}
	return nil
}

// RemoveServer removes server id from the configuration; only the leader
// can. It returns once the new configuration is committed.
func (s *Store) RemoveServer(ctx context.Context, id string) error {
	if err := s.refuse(); err != nil {
		return err
	}
	f := s.raft.RemoveServer(raft.ServerID(id), 0, timeoutOf(ctx))
	if _, err := s.wait(ctx, f); err != nil {
		return fmt.Errorf("remove server %s: %w", id, raftConfErr(err))
	}
	return nil
}

func raftConfErr(err error) error {
	if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
		return fmt.Errorf("%w: %w", ErrNotLeader, err)
	}
	return err
}

// Leader returns the leader's server ID and Raft address as this server
// knows them; both are empty while no leader is known.
func (s *Store) Leader() (id, address string) {
	addr, sid := s.raft.LeaderWithID()
	return string(sid), string(addr)
}

// WaitLeader waits until a leader is known, for at most ctx, and returns
// it as Leader does.
func (s *Store) WaitLeader(ctx context.Context) (id, address string, err error) {
	obsCh := make(chan raft.Observation, 4)
	obs := raft.NewObserver(obsCh, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	s.raft.RegisterObserver(obs)
	defer s.raft.DeregisterObserver(obs)
	for {
		if err := s.refuse(); err != nil {
			return "", "", err
		}
		if id, addr := s.Leader(); id != "" {
			return id, addr, nil
		}
		select {
		case <-obsCh:
		case <-s.failed:
		case <-s.done:
		case <-ctx.Done():
			return "", "", fmt.Errorf("no leader known: %w", ctx.Err())
		}
	}
}

// LinearizableRead returns once a read of this server's state sees every
// write acknowledged before it was called, as a read index does: this
// server must be the leader, have applied every entry of the terms before
// its own (a barrier when it won the election), and still be the leader
// when a majority answers a heartbeat. Writes are acknowledged only after
// the leader applied them, so nothing acknowledged is missing. It fails
// with ErrNotLeader on a server that is not (or is no longer) the leader,
// a leader cut off from the majority included.
func (s *Store) LinearizableRead(ctx context.Context) error {
	if err := s.refuse(); err != nil {
		return err
	}
	if !s.IsLeader() {
		return fmt.Errorf("linearizable read: %w", ErrNotLeader)
	}
	if err := s.reads.wait(ctx); err != nil {
		return fmt.Errorf("linearizable read: %w", err)
	}
	answered, err := s.wait(ctx, s.raft.VerifyLeader())
	switch {
	case !answered:
		return fmt.Errorf("linearizable read: %w", err)
	case err != nil:
		return fmt.Errorf("linearizable read: %w: %w", ErrNotLeader, err)
	}
	return nil
}

// readGate is open while this server leads and has applied every entry
// committed in earlier terms. followLeadership owns it.
type readGate struct {
	mu    sync.Mutex
	epoch uint64        // bumped at every change of leadership
	open  chan struct{} // closed while reads may be served; replaced when shut
}

func (g *readGate) init() { g.open = make(chan struct{}) }

// wait waits for the gate to open, for at most ctx; a leader that has not
// applied its predecessors' entries yet is only moments from it.
func (g *readGate) wait(ctx context.Context) error {
	g.mu.Lock()
	ch := g.open
	g.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// shut closes the gate and returns the new epoch.
func (g *readGate) shut() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.epoch++
	select {
	case <-g.open:
		g.open = make(chan struct{})
	default:
	}
	return g.epoch
}

// openAt opens the gate if no change of leadership happened since epoch.
func (g *readGate) openAt(epoch uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.epoch != epoch {
		return
	}
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

// gainedLeadership opens the read gate once a barrier shows every earlier
// entry applied. It runs in its own goroutine: a barrier waits on a
// quorum.
func (s *Store) gainedLeadership(epoch uint64) {
	defer s.bg.Done()
	for {
		f := s.raft.Barrier(10 * time.Second)
		answered, err := s.wait(context.Background(), f)
		switch {
		case answered && err == nil:
			s.reads.openAt(epoch)
			return
		case !answered, errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrRaftShutdown):
			return
		}
		s.log.Warn("store: barrier after winning the election failed; trying again", "err", err)
	}
}
