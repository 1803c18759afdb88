// Package server assembles one skiff server: the replicated store, the API
// server over it, the listener that serves the API, and the loops that run
// on the Raft leader only (the scheduler and the controllers). It owns
// their lifecycle: Run starts them under one errgroup and returns the
// first error any of them meets.
//
// When the store's storage fails, the server stops (fail-stop,
// ARCHITECTURE.md rule 10): the store shuts Raft down at once, /healthz
// answers 503 with the reason for a short grace, and Run returns an error
// naming the data directory and the cause.
//
// It wires; it decides nothing. What each part does is in its own package.
package server

import (
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"skiff.dev/skiff/control/api/events"
	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
	"skiff.dev/skiff/control/api/serve"
	"skiff.dev/skiff/control/apiserver"
	"skiff.dev/skiff/control/cluster"
	"skiff.dev/skiff/control/cluster/pki"
	"skiff.dev/skiff/control/controllers"
	"skiff.dev/skiff/control/scheduler"
	"skiff.dev/skiff/control/store"
)

// Config is what New needs.
type Config struct {
	// DataDir holds the server's state (the store, under DataDir/server).
	DataDir string
	// Listen is the API's address, host:port; port 0 picks one (Addr says
	// which).
	Listen string
	// Gossip is the gossip pool's address, host:port (port 0 picks one);
	// empty runs the server without gossip. Join lists gossip addresses of
	// members to join; none starts a pool.
	Gossip string
	Join   []string
	// BootstrapExpect is how many servers the cluster starts with. 0 or 1
	// without Join: a cluster of its own (this server alone). N >= 2: a new
	// server waits in the gossip pool until N new servers are seen, then
	// they bootstrap together, as Nomad's and Consul's bootstrap_expect. 0
	// with Join: a new server joins the cluster it meets and the leader
	// makes it a voter. Anything but a cluster of its own needs Gossip.
	BootstrapExpect int
	// DeadServerAfter is how long the leader waits before removing a voter
	// gone from the pool (cluster.DefaultDeadAfter when zero).
	DeadServerAfter time.Duration
	// RaftListen is the Raft transport's address ("127.0.0.1:0" when
	// empty); RaftAdvertise the one other servers dial (RaftListen's when
	// empty).
	RaftListen, RaftAdvertise string
	// Network is where services' cluster IPs and node ports and nodes'
	// pod CIDRs are allocated from (apiserver.Network; zero fields take
	// their defaults). Every server of a cluster should have the same.
	Network apiserver.Network
	// EventTTL is how long events are kept; controllers.DefaultEventTTL
	// when zero.
	EventTTL time.Duration
	// Tolerations are the not-ready and unreachable tolerations new pods
	// get unless they have their own (apiserver.DefaultTolerationSeconds
	// when nil): how long their node may be gone before they are evicted.
	Tolerations apiserver.Tolerations
	// NodeMonitorGracePeriod is how long the Ready heartbeat of a node
	// whose agent the gossip pool does not know may go unchanged before
	// the node is marked Unknown (controllers.DefaultNodeMonitorGracePeriod
	// when zero).
	NodeMonitorGracePeriod time.Duration
	Logger                 *slog.Logger
	// Limits are the API listener's; serve.DefaultLimits when zero.
	Limits serve.Limits

	// Token is the join token that servers and agents join with; empty:
	// the one kept in the data directory, else (a cluster of its own) a
	// new one, kept there. AgentToken, when set, is the one agents join
	// with instead (servers never can).
	Token, AgentToken string
	// PlainHTTP serves the API over plain HTTP on Listen, which must be a
	// loopback address (skiff dev); the server's own components and agents
	// then use a TLS listener of their own on 127.0.0.1 (InternalAddr).
	PlainHTTP bool
	// SANs are extra host names and addresses for the server's certificate.
	SANs []string
	// CertLifetime is how long issued certificates last (pki.DefaultLifetime
	// when zero); they are renewed after two thirds of it.
	CertLifetime time.Duration

	// SchedulerHold, when not nil, keeps the leader's scheduler from
	// placing any pod until it is closed (scheduler.Config.Hold): for
	// benchmarks that measure the placement of a backlog. No flag of
	// skiff server sets it.
	SchedulerHold <-chan struct{}

	// For tests: the grace between a store failure and Run's return
	// (failStopGrace when zero), and store.Config.ApplyHookForTesting.
	failStopGrace time.Duration
	applyHook     func(index uint64) error
	// For tests: while it returns an error, this server is cut off from
	// the other servers (Raft and forwarded calls), as by a partition.
	networkHook func() error
	// For tests: the agents the node lifecycle controller is told of,
	// instead of the gossip pool's.
	agents *agentView
}

// several says whether the server is one of a cluster of several.
func (c Config) several() bool {
	return c.BootstrapExpect >= 2 || (c.BootstrapExpect == 0 && len(c.Join) > 0)
}

// DefaultDeadServerAfter is Config.DeadServerAfter's default.
const DefaultDeadServerAfter = cluster.DefaultDeadAfter

// failStopGrace is how long a server whose store failed keeps its API up,
// answering /healthz with 503 and the reason and every call with
// Unavailable, before Run returns: long enough for a health checker polling
// each second to see why.
const failStopGrace = 2 * time.Second

// Server is one skiff server. Run it once.
type Server struct {
	cfg      Config
	log      *slog.Logger
	ready    chan struct{}
	addr     string
	internal string      // the TLS API address of the server's own components and agents
	admin    AdminConfig // set before ready closes
	token    string
}

// AdminConfig is how the cluster's first admin reaches the API: what the
// CLI's client config holds.
type AdminConfig struct {
	Server string // URL
	Token  string // the bootstrap admin's bearer token
	CA     []byte // the cluster CA (PEM); nil with PlainHTTP
}

// Admin is the bootstrap admin's client config, once Ready is closed.
func (s *Server) Admin() AdminConfig { <-s.ready; return s.admin }

// InternalAddr is the TLS API address for agents, once Ready is closed:
// Addr's, except with PlainHTTP.
func (s *Server) InternalAddr() string { <-s.ready; return s.internal }

// JoinToken is the token servers and agents join with, once Ready is
// closed.
func (s *Server) JoinToken() string { <-s.ready; return s.token }

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("data dir: required value")
	}
	if cfg.Listen == "" {
		return nil, errors.New("listen address: required value")
	}
	if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen address %q: %w", cfg.Listen, err)
	}
	if cfg.RaftListen == "" {
		cfg.RaftListen = "127.0.0.1:0"
	}
	for _, a := range []struct{ what, addr string }{{"raft listen address", cfg.RaftListen}, {"raft advertise address", cfg.RaftAdvertise}} {
		if a.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return nil, fmt.Errorf("%s %q: %w", a.what, a.addr, err)
		}
	}
	if cfg.BootstrapExpect < 0 {
		return nil, fmt.Errorf("bootstrap expect %d: must be 0 or more", cfg.BootstrapExpect)
	}
	if err := cfg.Network.Validate(); err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	if cfg.several() && cfg.Gossip == "" {
		return nil, errors.New("gossip address: required value: the servers of a cluster of several find each other by gossip")
	}
	if cfg.PlainHTTP {
		host, _, _ := net.SplitHostPort(cfg.Listen)
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("listen address %q: plain HTTP is served on a loopback address only", cfg.Listen)
		}
	}
	if cfg.EventTTL < 0 {
		return nil, fmt.Errorf("event TTL %s: must be positive", cfg.EventTTL)
	}
	if cfg.NodeMonitorGracePeriod < 0 {
		return nil, fmt.Errorf("node monitor grace period %s: must be positive", cfg.NodeMonitorGracePeriod)
	}
	for _, t := range []struct {
		what string
		secs *int64
	}{{"default not-ready toleration seconds", cfg.Tolerations.NotReadySeconds}, {"default unreachable toleration seconds", cfg.Tolerations.UnreachableSeconds}} {
		if t.secs != nil && *t.secs < 0 {
			return nil, fmt.Errorf("%s %d: must not be negative", t.what, *t.secs)
		}
	}
	if cfg.EventTTL == 0 {
		cfg.EventTTL = controllers.DefaultEventTTL
	}
	if cfg.Limits == (serve.Limits{}) {
		cfg.Limits = serve.DefaultLimits
	}
	if cfg.failStopGrace == 0 {
		cfg.failStopGrace = failStopGrace
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log, ready: make(chan struct{})}, nil
}

// Ready is closed once the API answers; Addr then says where.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is the API's address, once Ready is closed.
func (s *Server) Addr() string { <-s.ready; return s.addr }

// Run runs the server until ctx ends or one of its parts fails, and
// returns that failure. A storage failure of the store takes precedence:
// Run then returns
//
//	store in DIR failed at index N: CAUSE; this server stopped (fail-stop); fix the disk and restart it
//
// Everything it started has stopped when it returns.
func (s *Server) Run(ctx context.Context) error {
	// The API's address first: a port that is taken leaves no data
	// directory behind.
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen for the API on %s: %w", s.cfg.Listen, err)
	}
	defer ln.Close() // serve.Run closes it first when it runs
	s.addr = ln.Addr().String()
	s.internal = s.addr
	var iln net.Listener // PlainHTTP: the TLS listener of the server's own components
	if s.cfg.PlainHTTP {
		if iln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return fmt.Errorf("listen for the API on 127.0.0.1: %w", err)
		}
		defer iln.Close()
		s.internal = iln.Addr().String()
	}
	rln, err := net.Listen("tcp", s.cfg.RaftListen)
	if err != nil {
		return fmt.Errorf("listen for Raft on %s: %w", s.cfg.RaftListen, err)
	}
	defer rln.Close() // the store closes it first once it has it
	dir := filepath.Join(s.cfg.DataDir, "server")
	token, freshToken, err := resolveToken(s.cfg)
	if err != nil {
		return err
	}
	gossipToken := token // agents gossip too: they hold the agents' token
	if s.cfg.AgentToken != "" {
		gossipToken = s.cfg.AgentToken
	}
	id, clusterID, found, err := store.ReadIdentity(dir)
	if err != nil {
		return err
	}
	if !found {
		id = store.NewServerID()
	}
	raftAddr, err := store.AdvertiseAddr(rln, s.cfg.RaftAdvertise)
	if err != nil {
		return fmt.Errorf("raft transport: %w", err)
	}
	var pool *cluster.Pool
	leave := func() {
		if pool == nil {
			return
		}
		if err := pool.Leave(2 * time.Second); err != nil {
			s.log.Warn("leave the gossip pool", "err", err)
		}
	}
	defer func() { leave() }()
	several := s.cfg.several()
	if several {
		// One of several: meet the others before Raft starts, so that a
		// directory of another cluster is refused with nothing changed.
		if pool, err = s.joinPool(ctx, id, raftAddr.String(), clusterID, pki.GossipKey(gossipToken)); err != nil {
			return err
		}
	}
	// From here the server answers: joins (Unavailable until it has the
	// CA, with a provisional certificate, so that new servers meeting each
	// other are told at once), and the API once its store is open
	// (Unavailable until then).
	var caNow atomic.Pointer[pki.CA]
	front := &front{join: pki.NewJoinHandler(pki.HandlerConfig{
		CA: caNow.Load, ServerToken: token, AgentToken: s.cfg.AgentToken,
		Lifetime: s.cfg.CertLifetime, Logger: s.log.With("room", "pki"),
	})}
	provisional, err := provisionalTLS()
	if err != nil {
		return err
	}
	var tlsNow atomic.Pointer[tls.Config]
	tlsNow.Store(provisional)
	serveCtx, stopServing := context.WithCancel(ctx)
	var serving sync.WaitGroup
	defer func() { stopServing(); serving.Wait() }()
	served := make(chan error, 2)
	serveOn := func(l net.Listener) {
		serving.Go(func() {
			if err := serve.Run(serveCtx, l, front, s.cfg.Limits); err != nil {
				served <- err
			}
		})
	}
	tlsLn := ln
	if s.cfg.PlainHTTP {
		serveOn(ln) // loopback alone (New checks)
		tlsLn = iln
	}
	serveOn(tls.NewListener(tlsLn, &tls.Config{
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return tlsNow.Load(), nil },
	}))

	ident, found, err := s.loadIdentity(id)
	if err != nil {
		return err
	}
	switch {
	case found:
	case several && clusterID == "":
		if ident, err = s.joinIdentity(ctx, pool, id, token); err != nil {
			return err
		}
	case several:
		return fmt.Errorf("server credentials: %s has none, but its store belongs to cluster %s: restore them, or start this server from an empty directory to join again", tlsDir(s.cfg.DataDir), clusterID)
	default:
		if ident, err = s.newCA(id); err != nil {
			return err
		}
	}
	if freshToken {
		if err := saveToken(s.cfg.DataDir, token); err != nil {
			return err
		}
	}
	if !found {
		if err := s.save(ident); err != nil {
			return err
		}
	}
	s.admin = AdminConfig{Token: bootstrapToken(token), CA: ident.ca.CertPEM(), Server: "https://" + s.addr}
	if s.cfg.PlainHTTP { // the CLI's listener: plain, and no CA to trust
		s.admin.Server, s.admin.CA = "http://"+s.addr, nil
	}
	s.token = token

	// The server has its certificate: joins are answered with it, the
	// API (once its store is open) too.
	caNow.Store(ident.ca)
	tlsNow.Store(ident.cred.ServerConfig(tls.VerifyClientCertIfGiven, nil))

	raftTLS := mutualTLS(ident.cred)
	scfg := store.Config{
		Dir: dir, Listener: rln, AdvertiseAddr: s.cfg.RaftAdvertise, Cluster: several, ServerID: id,
		TLS: raftTLS, Peer: raftPeer(ident.cred),
		Logger: s.log.With("room", "store"), ApplyHookForTesting: s.cfg.applyHook, NetworkHookForTesting: s.cfg.networkHook,
	}
	var st *store.Store
	if several {
		if st, err = store.Open(ctx, scfg); err != nil {
			return err
		}
	} else {
		// With gossip, the pool is joined before waiting for a leader: a
		// directory of a cluster of several restarted without --join
		// hears from its leader only once the others find it by gossip.
		scfg.NoWait = s.cfg.Gossip != ""
		if st, err = store.Open(ctx, scfg); err != nil {
			return err
		}
		if s.cfg.Gossip != "" {
			if pool, err = s.joinPool(ctx, st.ServerID(), st.RaftAddr(), st.ClusterID(), pki.GossipKey(gossipToken)); err == nil {
				err = st.WaitReady(ctx)
			}
			if err != nil {
				st.Close()
				return err
			}
		}
	}
	defer st.Close()
	defer func() { leave(); pool = nil }() // before the store closes: others see a goodbye, not a failure
	health := func() error { return failStopped(st.Err()) }
	api := apiserver.New(apiserver.Config{
		Store: st, Logger: s.log.With("room", "apiserver"), Health: health,
		Members: func(context.Context) ([]*skiffv1.Member, error) { return members(st, pool, s.addr) },
		Auth:    &apiserver.AuthConfig{Peer: peerPrincipal, BootstrapToken: bootstrapToken(token)},
		Agents:  agentClients(ident.cred), AgentStreams: agentStreams(ident.cred),
		Network: s.cfg.Network, Tolerations: s.cfg.Tolerations,
	})
	// A cluster of one creates its default namespace before serving; one
	// of several has its leader do it (a directory of several restarted
	// without --join included).
	if !several {
		servers, err := st.RaftServers()
		if err != nil {
			return err
		}
		several = len(servers) > 1
	}
	if !several {
		if err := api.Init(ctx); err != nil {
			if ferr := health(); ferr != nil {
				return ferr
			}
			return fmt.Errorf("initialise the API: %w", err)
		}
	}
	handler := api.Handler()
	// With a gossip pool, any server may be one of several, even one that
	// started alone (a cluster grows by servers that join it): forward
	// calls, and keep the voters in step with the pool.
	if pool != nil {
		var dial func(ctx context.Context, network, addr string) (net.Conn, error)
		if hook := s.cfg.networkHook; hook != nil {
			d := &net.Dialer{Timeout: 2 * time.Second}
			dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
				if err := hook(); err != nil {
					return nil, err
				}
				return d.DialContext(ctx, network, addr)
			}
		}
		fwd := cluster.Forward(handler, cluster.ForwardConfig{
			Store: st, Pool: pool, Logger: s.log.With("room", "cluster"), Dial: dial,
			TLS: ident.cred.ClientConfig(serversOnly), PeerHeader: apiserver.PeerHeader, Peer: forwardedPeer,
		})
		defer fwd.Close()
		handler = fwd
	}
	front.api.Store(&handler)

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		select {
		case err := <-served:
			return err
		case <-ctx.Done():
			return nil
		}
	})
	if pool != nil {
		g.Go(func() error {
			return cluster.NewManager(cluster.ManagerConfig{
				Store: st, Pool: pool, Expect: s.cfg.BootstrapExpect, DeadAfter: s.cfg.DeadServerAfter, Logger: s.log.With("room", "cluster"),
			}).Run(ctx)
		})
	}
	g.Go(func() error {
		pki.Renew(ctx, ident.cred, func(context.Context) ([]byte, crypto.Signer, error) {
			certPEM, key, err := s.issue(ident.ca, id)
			if err != nil {
				return nil, nil, err
			}
			c, err := pki.NewCredential(certPEM, key, ident.ca.CertPEM())
			if err == nil {
				err = c.Save(tlsDir(s.cfg.DataDir), credName)
			}
			return certPEM, key, err
		}, s.log.With("room", "pki"))
		return nil
	})
	g.Go(func() error {
		// The leader-only loops reach the API as any client does (rule 1),
		// with the server's own certificate.
		p := new(http.Protocols)
		p.SetHTTP1(true)
		p.SetHTTP2(true)
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: ident.cred.ClientConfig(serversOnly), Protocols: p}}
		base := "https://" + s.internal
		agents := poolAgents(pool)
		if s.cfg.agents != nil {
			agents = *s.cfg.agents
		}
		l := loops{
			client:  kindClients(hc, base),
			agents:  agents,
			grace:   s.cfg.NodeMonitorGracePeriod,
			init:    several,
			api:     api,
			pods:    skiffv1connect.NewPodServiceClient(hc, base),
			nodes:   skiffv1connect.NewNodeServiceClient(hc, base),
			events:  skiffv1connect.NewEventServiceClient(hc, base),
			svcs:    skiffv1connect.NewServiceServiceClient(hc, base),
			eps:     skiffv1connect.NewEndpointsServiceClient(hc, base),
			rss:     skiffv1connect.NewReplicaSetServiceClient(hc, base),
			deploys: skiffv1connect.NewDeploymentServiceClient(hc, base),
			ttl:     s.cfg.EventTTL,
			hold:    s.cfg.SchedulerHold,
			log:     s.log,
		}
		<-WhileLeader(ctx, st.LeaderCh(), l.run)
		return nil
	})
	g.Go(func() error { return s.stopOnFailure(ctx, st) })
	close(s.ready)
	s.log.Info("skiff server is up", "api", s.addr, "data", s.cfg.DataDir, "server", st.ServerID(), "cluster", st.ClusterID())
	err = g.Wait()
	if ferr := health(); ferr != nil {
		return ferr // what went wrong after it follows from it
	}
	return err
}

// joinPool joins the gossip pool as server id. Servers start in any order:
// until one of the peers to join answers, it tries again every second (as
// Consul's and Nomad's retry_join), for as long as ctx lasts. Peers of
// another cluster are an error at once.
func (s *Server) joinPool(ctx context.Context, id, raftAddr, clusterID string, key []byte) (*cluster.Pool, error) {
	pool, err := cluster.Join(cluster.Config{
		Name: id, Role: cluster.RoleServer, Bind: s.cfg.Gossip, Raft: raftAddr, API: s.internal,
		Cluster: clusterID, SecretKey: key, Logger: s.log.With("room", "cluster"),
	})
	if err != nil {
		return nil, err
	}
	var peers []string // the same --join may be given to every server: skip this one
	for _, p := range s.cfg.Join {
		if p != s.cfg.Gossip && p != pool.Addr() {
			peers = append(peers, p)
		}
	}
	if len(peers) == 0 {
		return pool, nil
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		err := pool.Join(peers)
		var refused *cluster.RefusedError
		switch {
		case err == nil:
			return pool, nil
		case errors.As(err, &refused):
			_ = pool.Shutdown()
			return nil, fmt.Errorf("this server (data directory %s) cannot join: %w", s.cfg.DataDir, err)
		}
		s.log.Warn("join the gossip pool; trying again", "err", err)
		select {
		case <-t.C:
		case <-ctx.Done():
			_ = pool.Shutdown()
			return nil, fmt.Errorf("join the gossip pool: %w", err)
		}
	}
}

// stopOnFailure waits for the store to fail, gives health checkers the
// grace to see /healthz say why, and returns the failure, which stops Run.
// It returns nil when ctx ends first.
func (s *Server) stopOnFailure(ctx context.Context, st *store.Store) error {
	select {
	case <-st.Failed():
	case <-ctx.Done():
		return nil
	}
	err := failStopped(st.Err())
	s.log.Error("skiff server: the store failed; stopping", "err", err, "grace", s.cfg.failStopGrace)
	t := time.NewTimer(s.cfg.failStopGrace)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return err
}

// failStopped words a store's storage failure as the reason this server
// stopped; nil stays nil.
func failStopped(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w; this server stopped (fail-stop); fix the disk and restart it", err)
}

// loops are what runs on the leader alone.
type loops struct {
	client  controllers.ClientFunc
	agents  agentView
	grace   time.Duration // node monitor grace period
	init    bool          // create the default namespace on winning leadership
	api     *apiserver.Server
	pods    skiffv1connect.PodServiceClient
	nodes   skiffv1connect.NodeServiceClient
	events  skiffv1connect.EventServiceClient
	svcs    skiffv1connect.ServiceServiceClient
	eps     skiffv1connect.EndpointsServiceClient
	rss     skiffv1connect.ReplicaSetServiceClient
	deploys skiffv1connect.DeploymentServiceClient
	ttl     time.Duration
	hold    <-chan struct{} // Config.SchedulerHold
	log     *slog.Logger
}

func (l loops) run(ctx context.Context) {
	// A cluster of several has its default namespace created by its
	// leader; a cluster of one created it before serving.
	for l.init {
		err := l.api.Init(ctx)
		if err == nil || ctx.Err() != nil {
			break
		}
		l.log.Warn("initialise the API; trying again", "err", err)
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
		}
	}
	rec := events.NewRecorder(events.Config{Events: l.events, Component: "scheduler", Logger: l.log.With("room", "scheduler")})
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { rec.Run(ctx) })
	wg.Go(func() {
		(&controllers.EventTTL{Events: l.events, TTL: l.ttl, Logger: l.log.With("room", "controllers")}).Run(ctx)
	})
	wg.Go(func() {
		(&controllers.EndpointsController{Services: l.svcs, Pods: l.pods, Endpoints: l.eps, Logger: l.log.With("room", "controllers", "controller", "endpoints")}).Run(ctx)
	})
	rsLog := l.log.With("room", "controllers", "controller", "replicaset")
	rsRec := events.NewRecorder(events.Config{Events: l.events, Component: "replicaset-controller", Logger: rsLog})
	wg.Go(func() { rsRec.Run(ctx) })
	wg.Go(func() {
		(&controllers.ReplicaSetController{ReplicaSets: l.rss, Pods: l.pods, Events: rsRec, Logger: rsLog}).Run(ctx)
	})
	deployLog := l.log.With("room", "controllers", "controller", "deployment")
	deployRec := events.NewRecorder(events.Config{Events: l.events, Component: "deployment-controller", Logger: deployLog})
	wg.Go(func() { deployRec.Run(ctx) })
	wg.Go(func() {
		(&controllers.DeploymentController{Deployments: l.deploys, ReplicaSets: l.rss, Pods: l.pods, Events: deployRec, Logger: deployLog}).Run(ctx)
	})
	wg.Go(func() {
		(&controllers.NodeLifecycleController{
			Nodes: l.nodes, Agents: l.agents.agents, AgentsChanged: l.agents.changed, Grace: l.grace,
			Logger: l.log.With("room", "controllers", "controller", "nodelifecycle"),
		}).Run(ctx)
	})
	evictions := events.NewRecorder(events.Config{Events: l.events, Component: "taint-eviction-controller", Logger: l.log.With("room", "controllers")})
	wg.Go(func() { evictions.Run(ctx) })
	wg.Go(func() {
		(&controllers.TaintEvictionController{Pods: l.pods, Nodes: l.nodes, Events: evictions, Logger: l.log.With("room", "controllers", "controller", "tainteviction")}).Run(ctx)
	})
	wg.Go(func() {
		(&controllers.GarbageCollector{Client: l.client, Logger: l.log.With("room", "controllers", "controller", "garbagecollector")}).Run(ctx)
	})
	wg.Go(func() {
		(&controllers.NamespaceController{Client: l.client, Logger: l.log.With("room", "controllers", "controller", "namespace")}).Run(ctx)
	})
	_ = scheduler.New(scheduler.Config{Pods: l.pods, Nodes: l.nodes, Events: rec, Hold: l.hold, Logger: l.log.With("room", "scheduler")}).Run(ctx)
}

// kindClients returns a client of every kind at base, each made once.
func kindClients(hc *http.Client, base string) controllers.ClientFunc {
	cs := map[*kinds.Kind]kinds.Client{}
	for _, k := range kinds.All() {
		cs[k] = k.Client(hc, base)
	}
	return func(k *kinds.Kind) kinds.Client {
		if c := cs[k]; c != nil {
			return c
		}
		return k.Client(hc, base)
	}
}

// WhileLeader runs loop each time this server becomes the Raft leader and
// stops it when leadership is lost or ctx ends. The returned channel closes
// when it has stopped for good.
func WhileLeader(ctx context.Context, leader <-chan bool, loop func(context.Context)) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var stop func() // stops the running loop and waits for it; nil when none runs
		defer func() {
			if stop != nil {
				stop()
			}
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case is, ok := <-leader:
				if !ok {
					return
				}
				if is && stop == nil {
					stop = start(ctx, loop)
				} else if !is && stop != nil {
					stop()
					stop = nil
				}
			}
		}
	}()
	return done
}

// start runs loop in a goroutine and returns a function that stops it.
func start(ctx context.Context, loop func(context.Context)) func() {
	ctx, cancel := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		loop(ctx)
	}()
	return func() {
		cancel()
		<-stopped
	}
}
