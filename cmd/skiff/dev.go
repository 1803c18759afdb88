package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"skiff.dev/skiff/control/apiserver"
	"skiff.dev/skiff/control/controllers"
	"skiff.dev/skiff/control/server"
	"skiff.dev/skiff/node"
	"skiff.dev/skiff/node/agent"
)

// serverOptions are the flags of a server (skiff server, skiff dev).
type serverOptions struct {
	dataDir       string
	listen        string
	raftListen    string
	raftAdvertise string
	gossip        string
	join          []string
	eventTTL      time.Duration
	expect        int
	deadAfter     time.Duration
	token         tokenFlags
	agentToken    string
	sans          []string
	clientConfig  string // where to write the admin's client config; "" = the default
	network       networkFlags
	lifecycle     lifecycleFlags
}

// tokenFlags are --token and --token-file.
type tokenFlags struct {
	token, file string
}

func (t *tokenFlags) flags(cmd *cobra.Command, what string) {
	cmd.Flags().StringVar(&t.token, "token", "", what)
	cmd.Flags().StringVar(&t.file, "token-file", "", "file holding the join token (instead of --token)")
}

// value is the join token given, from --token or --token-file.
func (t *tokenFlags) value() (string, error) {
	if t.token != "" && t.file != "" {
		return "", errors.New("--token and --token-file: give one")
	}
	if t.file == "" {
		return t.token, nil
	}
	raw, err := os.ReadFile(t.file)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	tok := strings.TrimSpace(string(raw))
	if tok == "" {
		return "", fmt.Errorf("--token-file: %s is empty", t.file)
	}
	return tok, nil
}

// agentOptions are the flags of a node (skiff agent, skiff dev).
type agentOptions struct {
	gossip      string
	join        []string
	dataDir     string
	stateDir    string
	criSocket   string
	registryCfg string
	runtime     runtimeFlags
	nodeName    string
	agentListen string
	nodeIP      string
	maxPods     int
	// clusterCIDR and serviceCIDR are the cluster's, for the node's
	// service proxy: skiff agent's flags, skiff dev's server's.
	clusterCIDR, serviceCIDR string
	hostPaths                []string
	serverAddr               string
	token                    tokenFlags
	joinToken                string // resolved from token
	externalCRI              bool
}

// runOptions are what every long-running command shares.
type runOptions struct {
	logLevel string
	// logOut is where logs go; stderr when nil.
	logOut io.Writer
	// ready, when set, is called with the API address once everything runs.
	ready func(apiAddr string)
}

func (o *runOptions) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	out := o.logOut
	if out == nil {
		out = os.Stderr
	}
	return slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level})), nil
}

// run runs a long-running command's body until SIGINT or SIGTERM, with the
// logger its flags ask for, writing to the command's standard error.
func (o *runOptions) run(cmd *cobra.Command, body func(ctx context.Context, log *slog.Logger) error) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.logOut == nil {
		o.logOut = cmd.ErrOrStderr()
	}
	log, err := o.logger()
	if err != nil {
		return err
	}
	return body(ctx, log)
}

func (o *serverOptions) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", defaultServer, "address the API server listens on")
	f.DurationVar(&o.eventTTL, "event-ttl", controllers.DefaultEventTTL, "how long events are kept after they last happened")
	f.StringVar(&o.raftListen, "raft-listen", "127.0.0.1:0", "address the Raft transport listens on; port 0 picks one (a cluster of several servers needs a fixed one)")
	f.StringVar(&o.raftAdvertise, "raft-advertise", "", "Raft address other servers dial (default: --raft-listen's)")
	f.StringVar(&o.gossip, "gossip-listen", "", "gossip address, so that other servers and agents (skiff agent --join) find this server; empty runs without gossip")
	f.StringSliceVar(&o.join, "join", nil, "gossip addresses of members to join (with --gossip-listen); tried every second until one answers")
	o.network.flags(cmd)
	o.lifecycle.flags(cmd)
	f.StringVar(&o.clientConfig, "client-config", "", "where to write the admin's client config (server, bootstrap admin token, cluster CA) when it holds none for another server (default $SKIFF_CONFIG, else ~/.skiff/config); DATA-DIR/server/admin.config always has it")
}

func (o *agentOptions) flags(cmd *cobra.Command) {
	host, _ := os.Hostname()
	f := cmd.Flags()
	f.StringVar(&o.stateDir, "state-dir", "/run/skiff", "directory for runtime state that ends with the machine (pod network namespaces)")
	f.StringVar(&o.criSocket, "cri-socket", "/run/skiff/cri.sock", "unix socket of the node's CRI server")
	f.StringVar(&o.registryCfg, "registry-config", "", "YAML file of registry mirrors, plain-HTTP registries, auth (a docker config.json) and image GC thresholds (see README, Images)")
	o.runtime.flags(cmd)
	f.StringVar(&o.nodeName, "node-name", strings.ToLower(host), "name of this node")
	f.StringSliceVar(&o.hostPaths, "allowed-host-path", nil, "a directory under which pods' hostPath volumes may be (repeat for several); none by default")
	f.StringVar(&o.agentListen, "agent-listen", "127.0.0.1:0", "address the agent's API (container logs, for the server) listens on; port 0 picks one")
	f.IntVar(&o.maxPods, "max-pods", agent.DefaultMaxPods, "unfinished pods the node takes: its pods capacity, which the scheduler fills (the kubelet's --max-pods)")
	f.StringVar(&o.nodeIP, "node-ip", "", "the node's InternalIP: other nodes route this node's pod CIDR through it (default: --agent-listen's host, when an IP)")
}

func (o *runOptions) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
}

func (o *serverOptions) server(log *slog.Logger, dev bool) (*server.Server, error) {
	if o.eventTTL <= 0 {
		return nil, fmt.Errorf("--event-ttl: invalid value %s: must be positive", o.eventTTL)
	}
	if o.deadAfter < 0 {
		return nil, fmt.Errorf("--dead-server-after: invalid value %s: must be positive", o.deadAfter)
	}
	if o.expect < 0 {
		return nil, fmt.Errorf("--bootstrap-expect: invalid value %d: must be 0 or more", o.expect)
	}
	if (o.expect >= 2 || len(o.join) > 0) && o.gossip == "" {
		return nil, errors.New("--gossip-listen: required with --bootstrap-expect 2 or more and with --join: the servers of a cluster find each other by gossip")
	}
	network, err := o.network.network()
	if err != nil {
		return nil, err
	}
	tolerations, nodeGrace, err := o.lifecycle.settings()
	if err != nil {
		return nil, err
	}
	token, err := o.token.value()
	if err != nil {
		return nil, err
	}
	if token == "" && (o.expect >= 2 || len(o.join) > 0) {
		return nil, errors.New("--token: required with --bootstrap-expect 2 or more and with --join: the servers of a cluster share a join token (skiff server prints where the first server keeps its own)")
	}
	s, err := server.New(server.Config{
		DataDir: o.dataDir, Listen: o.listen, RaftListen: o.raftListen, RaftAdvertise: o.raftAdvertise,
		Gossip: o.gossip, Join: o.join, BootstrapExpect: o.expect, DeadServerAfter: o.deadAfter, EventTTL: o.eventTTL, Logger: log,
		Token: token, AgentToken: o.agentToken, SANs: o.sans, PlainHTTP: dev, Network: network,
		Tolerations: tolerations, NodeMonitorGracePeriod: nodeGrace,
	})
	if err != nil {
		return nil, fmt.Errorf("skiff server: %w", err)
	}
	return s, nil
}

func (o *agentOptions) node(log *slog.Logger) (*node.Node, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("a skiff node needs root: every pod gets its own network namespace")
	}
	token := o.joinToken
	if token == "" {
		var err error
		if token, err = o.token.value(); err != nil {
			return nil, err
		}
	}
	if token == "" {
		return nil, errors.New("--token: required value: the cluster's join token (a server keeps it in DATA-DIR/server/token)")
	}
	limits, err := o.runtime.limits()
	if err != nil {
		return nil, err
	}
	network, err := o.runtime.network()
	if err != nil {
		return nil, err
	}
	if o.maxPods < 0 {
		return nil, fmt.Errorf("--max-pods: invalid value %d: must not be negative", o.maxPods)
	}
	for _, f := range []struct{ flag, v string }{{"cluster-cidr", o.clusterCIDR}, {"service-cidr", o.serviceCIDR}} {
		if f.v == "" {
			continue
		}
		if _, err := parseCIDR(f.v); err != nil {
			return nil, fmt.Errorf("--%s: %w", f.flag, err)
		}
	}
	n, err := node.New(node.Config{
		Name: o.nodeName, Server: o.serverAddr, Gossip: o.gossip, Join: o.join, DataDir: o.dataDir, StateDir: o.stateDir,
		CRISocket: o.criSocket, ExternalCRI: o.externalCRI, AgentListen: o.agentListen, NodeIP: o.nodeIP, MaxPods: o.maxPods, Token: token, Version: version, Logger: log,
		RegistryConfig: o.registryCfg, AllowedHostPaths: o.hostPaths, Limits: limits,
		Network: network, ClusterCIDR: o.clusterCIDR, ServiceCIDR: o.serviceCIDR,
	})
	if err != nil {
		return nil, fmt.Errorf("skiff agent: %w", err)
	}
	return n, nil
}

// devOptions are skiff dev's flags: a server's and an agent's.
type devOptions struct {
	serverOptions
	agentOptions
	runOptions
}

func newDevCmd() *cobra.Command {
	o := &devOptions{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a one-node cluster (a server and an agent) in this process",
		Long: `Dev runs a single-server control plane (Raft store, API server, scheduler) and one
node (agent and CRI server), all in this process, with all state under
--data-dir: what "skiff server" and "skiff agent" run apart. It runs until
interrupted. It needs root: each pod gets its own network namespace.

It serves the API over plain HTTP, on a loopback address only, and still
asks every call for a token: at start it writes the admin's client config
(address and token) to ~/.skiff/config (or $SKIFF_CONFIG, or
--client-config) unless that file is another live server's, and always to
DATA-DIR/server/admin.config.`,
		Example: `  skiff dev --data-dir /var/lib/skiff
  skiff image import hello examples/hello/hello.wasm
  skiff apply -f examples/hello/pod.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, func(ctx context.Context, log *slog.Logger) error { return runDev(ctx, log, o) })
		},
	}
	cmd.Flags().StringVar(&o.serverOptions.dataDir, "data-dir", defaultDataDir, "directory for all persistent state (store, images, logs)")
	o.serverOptions.flags(cmd)
	o.agentOptions.flags(cmd)
	o.runOptions.flags(cmd)
	return cmd
}

// runDev runs a server and a node until ctx ends or either fails.
func runDev(ctx context.Context, log *slog.Logger, o *devOptions) error {
	if os.Geteuid() != 0 {
		return errors.New("skiff dev needs root: every pod gets its own network namespace")
	}
	srv, err := o.server(log, true)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(ctx) })
	select {
	case <-srv.Ready():
	case <-ctx.Done():
		return g.Wait()
	}
	o.agentOptions.dataDir = o.serverOptions.dataDir
	o.agentOptions.serverAddr = srv.InternalAddr()
	o.agentOptions.joinToken = srv.JoinToken()
	o.agentOptions.clusterCIDR, o.agentOptions.serviceCIDR = o.serverOptions.network.clusterCIDR, o.serverOptions.network.serviceCIDR
	writeAdminConfig(log, srv, o.serverOptions.dataDir, o.serverOptions.clientConfig)
	n, err := o.node(log)
	if err != nil {
		cancel()
		return errors.Join(err, g.Wait())
	}
	g.Go(func() error { return n.Run(ctx) })
	select {
	case <-n.Ready():
		log.Info("skiff dev is up", "api", srv.Addr(), "cri", o.criSocket, "node", o.nodeName, "data", o.serverOptions.dataDir)
		if o.ready != nil {
			o.ready(srv.Addr())
		}
	case <-ctx.Done():
	}
	return g.Wait()
}

func newServerCmd() *cobra.Command {
	o := &serverOptions{}
	r := &runOptions{}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a skiff server: the Raft store, the API server, the scheduler and controllers",
		Long: `Server runs one server of the control plane, with its state under
--data-dir/server: the Raft store, the API on --listen, and the scheduler and
controllers while it leads. It runs until interrupted.

Alone (no --join, --bootstrap-expect 0 or 1) it is a cluster of its own.
Three servers (or five) make a cluster that survives the loss of one (or two):
each gossips (--gossip-listen), joins the others (--join), and has a fixed
Raft address (--raft-listen). With --bootstrap-expect N, new servers wait
until N of them meet, then start the cluster together; a server started
later with --join alone joins the cluster it meets and the leader makes it
a voter. A data directory that belongs to another cluster is refused.

Any server answers any call: writes and reads are forwarded to the leader
(a read with the header "Skiff-Consistency: stale" is answered locally),
and watches resume on any server. Nodes join with "skiff agent --server
ADDR" or, through the gossip pool, "skiff agent --join GOSSIP-ADDR".

Everything is authenticated. The first server creates the cluster CA (its
key stays on the servers' disks, under DIR/server/tls) and serves the API
over HTTPS; Raft runs over mutual TLS between the cluster's servers, and
gossip is encrypted with a key derived from the join token. Servers and
agents join with that token (--token or --token-file; a server alone makes
one at its first start, in DIR/server/token), which they trade for a
certificate. At start the server writes the bootstrap admin's client config
(address, token, CA) to DIR/server/admin.config, and to --client-config
when that holds none for another live server; the CLI reads it.`,
		Example: `  skiff server --data-dir /var/lib/skiff --listen 127.0.0.1:7650

  # three servers on one machine, one per loopback address; a restarted
  # server needs --join too, so give every server the same list
  TOKEN=$(head -c 24 /dev/urandom | base32)
  for i in 1 2 3; do
    skiff server --data-dir /tmp/s$i --listen 127.0.0.$i:7650 --raft-listen 127.0.0.$i:7651 \
      --gossip-listen 127.0.0.$i:7652 --bootstrap-expect 3 --token "$TOKEN" \
      --join 127.0.0.1:7652,127.0.0.2:7652,127.0.0.3:7652 &
  done`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return r.run(cmd, func(ctx context.Context, log *slog.Logger) error {
				s, err := o.server(log, false)
				if err != nil {
					return err
				}
				return runServer(ctx, log, s, o.dataDir, o.clientConfig)
			})
		},
	}
	cmd.Flags().StringVar(&o.dataDir, "data-dir", defaultDataDir, "directory for the server's state (under DIR/server)")
	cmd.Flags().DurationVar(&o.deadAfter, "dead-server-after", server.DefaultDeadServerAfter, "how long a voter may be gone from the gossip pool before the leader removes it (only while the servers alive stay a majority)")
	cmd.Flags().IntVar(&o.expect, "bootstrap-expect", 0, "start a new cluster once this many new servers meet in the gossip pool (3 or 5; needs --gossip-listen); 0 with --join joins an existing cluster")
	o.token.flags(cmd, "the cluster's join token, shared by its servers (and its agents, unless --agent-token is set); a server alone makes one at its first start and keeps it in DATA-DIR/server/token")
	cmd.Flags().StringVar(&o.agentToken, "agent-token", "", "a join token for agents alone: agents may then not use --token, and only servers may join with it")
	cmd.Flags().StringSliceVar(&o.sans, "tls-san", nil, "extra host names or addresses for the server's certificate (clients check the name they dial)")
	o.flags(cmd)
	r.flags(cmd)
	return cmd
}

func newAgentCmd(g *globals) *cobra.Command {
	o := &agentOptions{}
	r := &runOptions{}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a skiff node: the agent and its CRI server, joined to a server",
		Long: `Agent runs one node: the CRI server (Wasm runtime, image store, one network
namespace per pod) on --cri-socket, and the agent that registers the node
with the server at --server (or $SKIFF_SERVER) and runs the pods bound to it. Its state is
under --data-dir/node. It joins with the cluster's join token (--token or
--token-file; a server keeps its own in DATA-DIR/server/token), trading it
for a certificate that names the node and its agent address: the node then
acts for itself alone, and its agent answers the cluster's servers alone.
It waits for the server when it is not up yet, and runs until interrupted.
It needs root.`,
		Example: `  skiff agent --server 127.0.0.1:7650 --token-file /var/lib/skiff/server/token --data-dir /var/lib/skiff-node --node-name edge-1`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case len(o.join) > 0 && cmd.Flag("server").Changed:
				return errors.New("--server and --join: give one, the server to use or the gossip pool to find servers in")
			case len(o.join) == 0:
				cfg, err := g.clientConfig()
				if err != nil {
					return err
				}
				o.serverAddr = cfg.Server
			}
			return r.run(cmd, func(ctx context.Context, log *slog.Logger) error {
				n, err := o.node(log)
				if err != nil {
					return err
				}
				return n.Run(ctx)
			})
		},
	}
	cmd.Flags().StringVar(&o.dataDir, "data-dir", defaultDataDir, "directory for the node's state (under DIR/node)")
	cmd.Flags().StringSliceVar(&o.join, "join", nil, "gossip addresses of servers or agents to join; the node then finds its servers in the pool and moves to a live one when its server dies (instead of --server)")
	cmd.Flags().StringVar(&o.gossip, "gossip-listen", "127.0.0.1:0", "gossip address of this node, with --join")
	o.token.flags(cmd, "the cluster's join token (a server keeps it in DATA-DIR/server/token): the agent trades it for its certificate")
	cmd.Flags().BoolVar(&o.externalCRI, "external-cri", false, "drive the CRI server that \"skiff cri\" already runs on --cri-socket, instead of running one: the agent can then restart without touching a container")
	cmd.Flags().StringVar(&o.clusterCIDR, "cluster-cidr", apiserver.DefaultClusterCIDR.String(), "the cluster's range of pod IPs, as its servers were given it: the service proxy masquerades traffic to cluster IPs from outside it")
	cmd.Flags().StringVar(&o.serviceCIDR, "service-cidr", apiserver.DefaultServiceCIDR.String(), "the cluster's range of cluster IPs, as its servers were given it: the node refuses an address of it that no service has, instead of routing it out")
	o.flags(cmd)
	r.flags(cmd)
	return cmd
}
