package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"skiff.dev/skiff/control/store"
)

// ManagerConfig is what a Manager needs.
type ManagerConfig struct {
	Store *store.Store // a store opened with Config.Cluster
	Pool  *Pool
	// Expect is --bootstrap-expect: a new server bootstraps a new cluster
	// once it sees this many new servers in the pool (itself included);
	// 0 joins an existing cluster instead.
	Expect int
	// DeadAfter is how long a voter must be gone from the pool before the
	// leader removes it (DefaultDeadAfter when zero).
	DeadAfter time.Duration
	Logger    *slog.Logger
}

// DefaultDeadAfter is ManagerConfig.DeadAfter's default: long enough for a
// restart, as a node's reboot, not to shrink the cluster.
const DefaultDeadAfter = 5 * time.Minute

// Manager keeps the Raft voters in step with the servers in the gossip
// pool:
//   - a new server bootstraps the cluster with the others once Expect of
//     them are seen, or adopts the cluster of the servers it meets;
//   - the leader adds every live server of its cluster as a voter (or
//     updates its address), and removes a voter gone from the pool for
//     DeadAfter, only when the servers still alive remain a majority of
//     the smaller configuration.
type Manager struct {
	cfg      ManagerConfig
	log      *slog.Logger
	gone     map[string]time.Time // voters missing from the pool, since when
	reconned time.Time            // last attempt to reach failed servers again
}

// reconnectEvery is how often a server tries to gossip again with voters
// the pool saw fail, as Serf's reconnect does: memberlist gives up on a
// failed member, so a server restarted without --join, or after a
// partition, would otherwise stay apart from the others' pools.
const reconnectEvery = 10 * time.Second

// NewManager returns a Manager for cfg.
func NewManager(cfg ManagerConfig) *Manager {
	if cfg.DeadAfter == 0 {
		cfg.DeadAfter = DefaultDeadAfter
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, log: cfg.Logger, gone: map[string]time.Time{}}
}

// managerTick is how often the manager looks again when the pool is
// quiet: leadership changes and the dead-voter timer are not pool events.
const managerTick = time.Second

// Run reconciles until ctx ends. It returns an error only when this server
// cannot be part of the cluster it meets (its directory belongs to
// another).
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(managerTick)
	defer t.Stop()
	for {
		changed := m.cfg.Pool.Changed()
		if err := m.reconcile(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-t.C:
		}
	}
}

// errFatal marks a reconcile error that stops the server.
var errFatal = errors.New("fatal")

func (m *Manager) reconcile(ctx context.Context) error {
	st, pool := m.cfg.Store, m.cfg.Pool
	servers := pool.Servers()
	if st.ClusterID() == "" {
		if err := m.join(servers); err != nil {
			if errors.Is(err, errFatal) {
				return err
			}
			m.log.Warn("cluster: join", "err", err)
		}
		return nil
	}
	m.reconnect()
	if !st.IsLeader() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conf, err := st.RaftServers()
	if err != nil {
		m.log.Warn("cluster: read the raft configuration", "err", err)
		return nil
	}
	inConf := map[string]store.RaftServer{}
	for _, r := range conf {
		inConf[r.ID] = r
	}
	alive := map[string]bool{}
	for _, s := range servers {
		alive[s.Name] = true
		if s.Cluster != "" && s.Cluster != st.ClusterID() || s.Raft == "" {
			continue
		}
		if r, ok := inConf[s.Name]; ok && r.Voter && r.Address == s.Raft {
			continue
		}
		m.log.Info("cluster: adding a voter", "server", s.Name, "raft", s.Raft)
		if err := st.AddVoter(ctx, s.Name, s.Raft); err != nil {
			m.log.Warn("cluster: add a voter", "server", s.Name, "err", err)
			return nil
		}
	}
	m.removeDead(ctx, conf, alive)
	return nil
}

// reconnect tries, every reconnectEvery, to join the gossip addresses of
// the Raft servers the pool saw fail or leave.
func (m *Manager) reconnect() {
	if time.Since(m.reconned) < reconnectEvery {
		return
	}
	m.reconned = time.Now()
	conf, err := m.cfg.Store.RaftServers()
	if err != nil {
		return
	}
	inConf := map[string]bool{}
	for _, r := range conf {
		inConf[r.ID] = true
	}
	var addrs []string
	for _, mem := range m.cfg.Pool.Members() {
		if mem.Role == RoleServer && mem.State != StateAlive && inConf[mem.Name] && mem.Gossip != "" {
			addrs = append(addrs, mem.Gossip)
		}
	}
	if len(addrs) == 0 {
		return
	}
	if err := m.cfg.Pool.Join(addrs); err != nil {
		m.log.Debug("cluster: reach failed servers again", "addrs", addrs, "err", err)
	}
}

// join makes a new server part of a cluster: it adopts the cluster of the
// servers it meets, or, with Expect, bootstraps a new one with the other
// new servers once Expect are seen.
func (m *Manager) join(servers []Member) error {
	st, pool := m.cfg.Store, m.cfg.Pool
	for _, s := range servers {
		if s.Cluster == "" {
			continue
		}
		if err := st.AdoptCluster(s.Cluster); err != nil {
			return fmt.Errorf("%w: %w", errFatal, err)
		}
		m.log.Info("cluster: joining", "cluster", s.Cluster, "via", s.Name)
		return pool.SetCluster(s.Cluster, 5*time.Second)
	}
	if m.cfg.Expect < 2 || len(servers) < m.cfg.Expect {
		return nil
	}
	var boot []store.RaftServer
	for _, s := range servers {
		boot = append(boot, store.RaftServer{ID: s.Name, Address: s.Raft, Voter: true})
	}
	m.log.Info("cluster: bootstrapping", "servers", len(boot))
	if err := st.Bootstrap(boot); err != nil {
		return err
	}
	return pool.SetCluster(st.ClusterID(), 5*time.Second)
}

// removeDead removes a voter gone from the pool for DeadAfter, one per
// pass, while those alive stay a majority of what remains.
func (m *Manager) removeDead(ctx context.Context, conf []store.RaftServer, alive map[string]bool) {
	st := m.cfg.Store
	alive[st.ServerID()] = true
	id, why := deadVoter(conf, alive, m.gone, time.Now(), m.cfg.DeadAfter)
	switch {
	case why != "":
		m.log.Warn("cluster: "+why, "server", id)
	case id != "":
		m.log.Info("cluster: removing a voter gone from the pool", "server", id, "since", m.gone[id])
		if err := st.RemoveServer(ctx, id); err != nil {
			m.log.Warn("cluster: remove a voter", "server", id, "err", err)
			return
		}
		delete(m.gone, id)
	}
}

// deadVoter notes in gone since when each voter of conf has been missing
// from alive (and forgets those back or no longer in conf), and picks one
// missing for deadAfter whose removal leaves the live voters a majority of
// the smaller configuration. why, when set, says why one that is due may
// not go.
func deadVoter(conf []store.RaftServer, alive map[string]bool, gone map[string]time.Time, now time.Time, deadAfter time.Duration) (id, why string) {
	voters, up := 0, 0
	inConf := map[string]bool{}
	for _, r := range conf {
		if !r.Voter {
			continue
		}
		inConf[r.ID] = true
		voters++
		if alive[r.ID] {
			up++
			delete(gone, r.ID)
		} else if _, ok := gone[r.ID]; !ok {
			gone[r.ID] = now
		}
	}
	var due []string
	for g, since := range gone {
		switch {
		case !inConf[g]:
			delete(gone, g)
		case now.Sub(since) >= deadAfter:
			due = append(due, g)
		}
	}
	if len(due) == 0 {
		return "", ""
	}
	sort.Strings(due)
	if up < (voters-1)/2+1 {
		return due[0], fmt.Sprintf("a voter has been gone for %s, but without it the %d servers alive would not be a majority of %d; keeping it", deadAfter, up, voters-1)
	}
	return due[0], ""
}
