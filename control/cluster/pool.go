// Package cluster keeps skiff's membership: one hashicorp/memberlist gossip
// pool that servers and agents join, each member tagged with its role, its
// cluster and the addresses others need (a server's Raft and API
// addresses, an agent's API). Servers find each other through it; agents
// find servers through it.
//
// It owns the pool (pool.go), the Raft voters kept in step with it
// (manager.go: bootstrap-expect, join, add and remove voters), and the
// forwarding that lets any server answer any call (forward.go). Who leads
// is Raft's business, in the store.
package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Role is what a member is.
type Role string

const (
	RoleServer Role = "server"
	RoleAgent  Role = "agent"
)

// State is what the pool knows of a member.
type State string

const (
	StateAlive  State = "alive"
	StateFailed State = "failed" // stopped answering
	StateLeft   State = "left"   // said goodbye
)

// Member is one member of the pool, as this member sees it.
type Member struct {
	Name string
	Role Role
	// Gossip is the member's gossip address, host:port.
	Gossip string
	// Raft is a server's Raft address; empty for agents.
	Raft string
	// API is the member's API address: a server's Connect API, an agent's.
	API string
	// Cluster is the ID of the cluster a server belongs to; empty for a
	// new server that has not joined one yet, and for agents.
	Cluster string
	State   State
}

// tags are what each member gossips about itself (memberlist's node meta).
type tags struct {
	Role Role   `json:"r"`
	Raft string `json:"raft,omitempty"`
	API  string `json:"api,omitempty"`
	// Cluster is a server's cluster ID (Member.Cluster).
	Cluster string `json:"c,omitempty"`
	// Leaving is gossiped just before a member leaves, so that the others
	// can tell a goodbye from a failure (memberlist's leave notice does not
	// say which).
	Leaving bool `json:"leaving,omitempty"`
}

// Config is what Join needs.
type Config struct {
	// Name is unique in the pool: the server ID or the node name.
	Name string
	Role Role
	// Bind is the gossip address, host:port; port 0 picks one.
	Bind string
	// Raft and API are the addresses the member advertises.
	Raft, API string
	// Cluster is a server's cluster ID, empty while it has none. The pool
	// refuses servers of another cluster: a Join that meets one fails.
	Cluster string
	// Peers are gossip addresses of members to join; none starts a pool.
	Peers []string
	// SecretKey is the cluster's gossip key: 16, 24 or 32 bytes (AES-128,
	// -192 or -256). Every message, sent and received, is then encrypted
	// and authenticated with it: a member without the key, or with another,
	// can neither join nor be heard. Nil gossips in the clear, for tests of
	// other features; servers and agents of a real cluster always set it.
	SecretKey []byte
	Logger    *slog.Logger
	// fast shortens gossip timing, for tests.
	fast bool
}

// Pool is this member's view of the pool. Its methods are safe for
// concurrent use.
type Pool struct {
	ml   *memberlist.Memberlist
	log  *slog.Logger
	meta *metaDelegate

	tagsMu  sync.Mutex
	tags    tags
	cluster string // tags.Cluster, read by the merge check

	mu      sync.Mutex
	members map[string]Member
	leaving map[string]bool // members that said goodbye
	changed chan struct{}   // closed and replaced on every change
	refused error           // the last merge refused by clusterCheck
}

// Join creates this member, joins it to Peers (when any), and returns the
// pool. A join that reaches no peer is an error naming them.
func Join(cfg Config) (*Pool, error) {
	if cfg.Name == "" {
		return nil, errors.New("cluster: name: required value")
	}
	if cfg.Role != RoleServer && cfg.Role != RoleAgent {
		return nil, fmt.Errorf("cluster: role: unsupported value %q", cfg.Role)
	}
	host, portText, err := net.SplitHostPort(cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip address %q: %w", cfg.Bind, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("cluster: gossip address %q: invalid port", cfg.Bind)
	}
	switch len(cfg.SecretKey) {
	case 0, 16, 24, 32:
	default:
		return nil, fmt.Errorf("cluster: gossip key: %d bytes; it must be 16, 24 or 32", len(cfg.SecretKey))
	}
	t := tags{Role: cfg.Role, Raft: cfg.Raft, API: cfg.API, Cluster: cfg.Cluster}
	meta, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	if len(meta) > memberlist.MetaMaxSize-len(`,"leaving":true`) {
		return nil, fmt.Errorf("cluster: the member's addresses take %d bytes; at most %d fit", len(meta), memberlist.MetaMaxSize-len(`,"leaving":true`))
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	p := &Pool{log: lg, meta: &metaDelegate{meta: meta}, cluster: cfg.Cluster, tags: t, members: map[string]Member{}, leaving: map[string]bool{}, changed: make(chan struct{})}
	p.meta.pool = p

	mc := memberlist.DefaultLANConfig()
	// Faster failure detection than memberlist's LAN defaults (probe
	// every second, suspicion of 4 to 24 probe intervals): a member that
	// stops answering is declared failed in 2 to 4 s in a pool of under ten
	// (a little more in larger ones: the suspicion grows with log10 of the
	// pool's size), so that the node lifecycle controller can evict the
	// pods of a dead agent soon after. On a LAN, a probe's answer takes
	// well under the timeout.
	mc.ProbeInterval = 500 * time.Millisecond
	mc.ProbeTimeout = 250 * time.Millisecond
	mc.SuspicionMult = 2
	mc.SuspicionMaxTimeoutMult = 2
	if cfg.fast {
		mc = memberlist.DefaultLocalConfig()
		mc.ProbeInterval = 100 * time.Millisecond
		mc.ProbeTimeout = 50 * time.Millisecond
		mc.GossipInterval = 20 * time.Millisecond
		mc.SuspicionMult = 1
		mc.PushPullInterval = time.Second
	}
	// A member declared failed may come back under its name at another
	// address a second later: an agent restarted after a crash gossips
	// from a new port (memberlist's default never lets it, so its node
	// would stay failed until the next full state exchange).
	mc.DeadNodeReclaimTime = time.Second
	mc.Name = cfg.Name
	if len(cfg.SecretKey) > 0 {
		// memberlist builds its keyring from SecretKey and, with both
		// verify flags, drops whatever does not decrypt with it.
		mc.SecretKey = cfg.SecretKey
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertisePort = port
	mc.Delegate = p.meta
	mc.Events = p
	mc.Merge = (*clusterCheck)(p)
	mc.Alive = (*clusterCheck)(p)
	mc.Logger = log.New(io.Discard, "", 0)
	if lg.Enabled(context.Background(), slog.LevelDebug) {
		mc.Logger = slog.NewLogLogger(lg.Handler(), slog.LevelDebug)
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster: start gossip on %s: %w", cfg.Bind, err)
	}
	p.ml = ml
	if len(cfg.Peers) > 0 {
		if err := p.Join(cfg.Peers); err != nil {
			_ = ml.Shutdown()
			return nil, err
		}
	}
	return p, nil
}

// Join joins this member to the pool of peers (gossip addresses). It fails
// when none answers, and with a *RefusedError when they belong to another
// cluster.
func (p *Pool) Join(peers []string) error {
	p.mu.Lock()
	p.refused = nil
	p.mu.Unlock()
	if _, err := p.ml.Join(peers); err != nil {
		p.mu.Lock()
		refused := p.refused
		p.mu.Unlock()
		if refused != nil {
			return &RefusedError{Err: refused}
		}
		if msg := err.Error(); strings.Contains(msg, "no installed keys could decrypt") || strings.Contains(msg, "encryption is not configured") {
			// memberlist's words for gossip under another key: a token that
			// is not this pool's.
			return &RefusedError{Err: fmt.Errorf("the members at %s gossip with another key: the join token is not their cluster's (check --token)", strings.Join(peers, ", "))}
		}
		return fmt.Errorf("cluster: join %s: %w", strings.Join(peers, ", "), err)
	}
	return nil
}

// RefusedError is a join refused because the pool's servers belong to
// another cluster, or gossip with another key (another join token): trying
// again will not help.
type RefusedError struct{ Err error }

func (e *RefusedError) Error() string { return "cluster: join refused: " + e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

// Addr is this member's gossip address, the one others join.
func (p *Pool) Addr() string {
	n := p.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Members returns every member seen, failed and left ones included, by name.
func (p *Pool) Members() []Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Member, 0, len(p.members))
	for _, m := range p.members {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Servers returns the live servers.
func (p *Pool) Servers() []Member {
	var out []Member
	for _, m := range p.Members() {
		if m.Role == RoleServer && m.State == StateAlive {
			out = append(out, m)
		}
	}
	return out
}

// Changed returns a channel that is closed at the next change of the view.
func (p *Pool) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// goodbye starts the message a leaving member sends each live member
// (followed by ":" and its name), so that it is seen as left rather than
// failed: memberlist's own leave notice does not say which.
var goodbye = []byte("skiff-cluster-goodbye")

// Leave tells the pool this member goes, waiting at most timeout for the
// word to spread, then stops gossiping.
func (p *Pool) Leave(timeout time.Duration) error {
	p.tagsMu.Lock()
	t := p.tags
	p.tagsMu.Unlock()
	t.Leaving = true
	var errs []error
	if meta, err := json.Marshal(t); err == nil {
		p.meta.set(meta) // for members that only hear of it by gossip
	}
	self := p.ml.LocalNode().Name
	msg := append(append([]byte{}, goodbye...), ':')
	msg = append(msg, self...)
	for _, n := range p.ml.Members() {
		if n.Name != self {
			if err := p.ml.SendReliable(n, msg); err != nil {
				p.log.Debug("gossip: goodbye not delivered", "member", n.Name, "err", err)
			}
		}
	}
	errs = append(errs, p.ml.Leave(timeout), p.ml.Shutdown())
	return errors.Join(errs...)
}

// SetCluster gossips that this server now belongs to cluster id (it had
// none), waiting at most timeout for the word to go out.
func (p *Pool) SetCluster(id string, timeout time.Duration) error {
	p.tagsMu.Lock()
	p.tags.Cluster = id
	meta, err := json.Marshal(p.tags)
	p.tagsMu.Unlock()
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.cluster = id
	p.mu.Unlock()
	p.meta.set(meta)
	return p.ml.UpdateNode(timeout)
}

// Shutdown stops gossiping without a goodbye: the others see a failure.
func (p *Pool) Shutdown() error { return p.ml.Shutdown() }

func (p *Pool) set(n *memberlist.Node, state State) {
	var t tags
	if err := json.Unmarshal(n.Meta, &t); err != nil {
		p.log.Warn("gossip: a member's tags do not decode; ignoring it", "member", n.Name, "err", err)
		return
	}
	m := Member{Name: n.Name, Role: t.Role, Gossip: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))), Raft: t.Raft, API: t.API, Cluster: t.Cluster, State: state}
	p.mu.Lock()
	defer p.mu.Unlock()
	if old, ok := p.members[n.Name]; ok && old == m {
		return
	}
	p.members[n.Name] = m
	close(p.changed)
	p.changed = make(chan struct{})
	p.log.Debug("gossip: member changed", "member", m.Name, "role", m.Role, "state", m.State)
}

// NotifyJoin is memberlist's: a member joined or came back.
func (p *Pool) NotifyJoin(n *memberlist.Node) { p.set(n, StateAlive) }

// NotifyUpdate is memberlist's: a member's tags changed.
func (p *Pool) NotifyUpdate(n *memberlist.Node) { p.set(n, StateAlive) }

// NotifyLeave is memberlist's: a member left or failed. Its last tags say
// which.
func (p *Pool) NotifyLeave(n *memberlist.Node) {
	var t tags
	p.mu.Lock()
	said := p.leaving[n.Name]
	delete(p.leaving, n.Name)
	p.mu.Unlock()
	if said || (json.Unmarshal(n.Meta, &t) == nil && t.Leaving) {
		p.set(n, StateLeft)
		return
	}
	p.set(n, StateFailed)
}

// metaDelegate gossips the member's tags and hears goodbyes.
type metaDelegate struct {
	pool *Pool
	mu   sync.Mutex
	meta []byte
}

func (d *metaDelegate) set(meta []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.meta = meta
}

// NodeMeta is memberlist's: the tags this member gossips.
func (d *metaDelegate) NodeMeta(int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.meta
}

// NotifyMsg is memberlist's: a message from another member. The only one
// sent is a goodbye, "skiff-cluster-goodbye:NAME".
func (d *metaDelegate) NotifyMsg(msg []byte) {
	name, ok := bytes.CutPrefix(msg, goodbye)
	if !ok || len(name) < 2 {
		return
	}
	d.pool.mu.Lock()
	d.pool.leaving[string(name[1:])] = true
	d.pool.mu.Unlock()
}
func (*metaDelegate) GetBroadcasts(_, _ int) [][]byte   { return nil }
func (*metaDelegate) LocalState(bool) []byte            { return nil }
func (*metaDelegate) MergeRemoteState(_ []byte, _ bool) {}

// clusterCheck keeps servers of different clusters out of one pool: a
// server of another cluster is refused, both when pools merge (a Join) and
// when one is announced alive by gossip.
type clusterCheck Pool

// NotifyMerge is memberlist's: the members another pool brings.
func (c *clusterCheck) NotifyMerge(peers []*memberlist.Node) error {
	for _, n := range peers {
		if err := c.check(n); err != nil {
			return err
		}
	}
	return nil
}

// NotifyAlive is memberlist's: a member announced alive.
func (c *clusterCheck) NotifyAlive(n *memberlist.Node) error { return c.check(n) }

func (c *clusterCheck) check(n *memberlist.Node) error {
	var t tags
	if json.Unmarshal(n.Meta, &t) != nil || t.Role != RoleServer || t.Cluster == "" {
		return nil
	}
	c.mu.Lock()
	ours := c.cluster
	c.mu.Unlock()
	if ours != "" && t.Cluster != ours {
		err := fmt.Errorf("server %s (gossip %s) belongs to cluster %s, this member to cluster %s: pools of two clusters do not merge", n.Name, n.Address(), t.Cluster, ours)
		c.mu.Lock()
		c.refused = err
		c.mu.Unlock()
		return err
	}
	return nil
}
