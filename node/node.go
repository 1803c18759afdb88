// Package node assembles one skiff node: the CRI server with its runtime
// and image store, the agent that drives it over its socket, and the
// listener of the agent's API. It owns their lifecycle: Run starts them
// under one errgroup and returns the first error any of them meets. The
// pod network (CNI or loopback, PodNetwork) is the CRI server's; the
// service proxy joins later.
//
// It wires; it decides nothing. What each part does is in its own package.
package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	skiffrt "skiff.dev/skiff/runtime"
	"skiff.dev/skiff/runtime/oci"
	"skiff.dev/skiff/runtime/wasm"

	"connectrpc.com/connect"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
	"skiff.dev/skiff/control/api/serve"
	"skiff.dev/skiff/control/cluster"
	"skiff.dev/skiff/control/cluster/pki"
	"skiff.dev/skiff/cri"
	"skiff.dev/skiff/netns"
	"skiff.dev/skiff/node/agent"
	"skiff.dev/skiff/node/proxy"
	"skiff.dev/skiff/runtime/image"
)

// Config is what New needs.
type Config struct {
	// Name is the node's name, an RFC 1123 subdomain.
	Name string
	// Server is the API server's address (host:port or URL). When empty,
	// the node finds its servers through the gossip pool it joins at Join.
	Server string
	// Gossip is the node's gossip address (port 0 picks one) and Join the
	// gossip addresses of members to join; used when Server is empty.
	Gossip string
	Join   []string
	// DataDir holds the node's state under DataDir/node: images, the CRI
	// server's records, container logs.
	DataDir string
	// AllowedHostPaths are the directories hostPath volumes may be under.
	AllowedHostPaths []string
	// StateDir holds what must not outlive a reboot: pinned network
	// namespaces.
	StateDir string
	// CRISocket is the CRI server's unix socket.
	CRISocket string
	// ExternalCRI: a CRI server already serves CRISocket (skiff cri), and
	// the node runs its agent alone, as a kubelet beside containerd.
	ExternalCRI bool
	// AgentListen is where the agent's API listens, host:port; port 0
	// picks one. The node's certificate names it, and the servers reach
	// the agent there and nowhere else.
	AgentListen string
	// MaxPods is how many unfinished pods the node takes; the agent's
	// default (110, as the kubelet's) when 0.
	MaxPods int
	// NodeIP is the node's InternalIP: other nodes route its pods'
	// traffic through it, and its pods report it as their hostIP. Empty:
	// the host of AgentListen's address when that is an IP.
	NodeIP string
	// Token is the cluster's join token: the node trades it for its
	// certificate, and the gossip pool's key derives from it.
	Token string
	// Limits are the runtime host's (zero values: cri's defaults).
	Limits RuntimeLimits
	// Network is how the runtime host networks pods.
	Network PodNetwork
	// ClusterCIDR and ServiceCIDR are the cluster's pod and service IP
	// ranges, as the servers were given them. A node with a pod network
	// (CNI) proxies services (node/proxy): it routes to the other nodes'
	// pod CIDRs, refuses service addresses no service has, and
	// masquerades traffic to cluster IPs from outside ClusterCIDR.
	ClusterCIDR, ServiceCIDR string
	// RegistryConfig is the path of the image store's registry config
	// (image.LoadConfig); empty: defaults.
	RegistryConfig string
	Version        string
	Logger         *slog.Logger
}

// ImageDir is where a node keeps its images under its data directory.
func ImageDir(dataDir string) string { return filepath.Join(dataDir, "node", "images") }

// Node is one skiff node. Run it once.
type Node struct {
	cfg   Config
	log   *slog.Logger
	ready chan struct{}
}

// New checks cfg and returns a Node.
func New(cfg Config) (*Node, error) {
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"node name", cfg.Name}, {"data dir", cfg.DataDir},
		{"state dir", cfg.StateDir}, {"CRI socket", cfg.CRISocket}, {"agent listen address", cfg.AgentListen},
		{"join token", cfg.Token},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if cfg.Server == "" && len(cfg.Join) == 0 {
		missing = append(missing, "a server or gossip peers to join")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("node: required: %s", strings.Join(missing, ", "))
	}
	if cfg.Server == "" && cfg.Gossip == "" {
		cfg.Gossip = "127.0.0.1:0"
	}
	host, _, err := net.SplitHostPort(cfg.AgentListen)
	if err != nil {
		return nil, fmt.Errorf("agent listen address %q: %w", cfg.AgentListen, err)
	}
	if cfg.NodeIP == "" {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			cfg.NodeIP = ip.String()
		}
	} else if ip := net.ParseIP(cfg.NodeIP); ip == nil || ip.IsUnspecified() {
		return nil, fmt.Errorf("node IP %q: not an IP address a node can be reached on", cfg.NodeIP)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Node{cfg: cfg, log: log, ready: make(chan struct{})}, nil
}

// Ready is closed once the node is registered with the server and runs.
func (n *Node) Ready() <-chan struct{} { return n.ready }

// Run runs the node until ctx ends or one of its parts fails, and returns
// that failure. Containers keep running when it returns; the next Run
// adopts them.
func (n *Node) Run(ctx context.Context) error {
	// The node joins the cluster before it keeps anything: a refused
	// join token leaves nothing behind.
	ln, err := net.Listen("tcp", n.cfg.AgentListen)
	if err != nil {
		return fmt.Errorf("listen for the agent API on %s: %w", n.cfg.AgentListen, err)
	}
	defer ln.Close() // serve.Run closes it first when it runs
	endpoint := ln.Addr().String()
	var pool *cluster.Pool
	if n.cfg.Server == "" {
		pool, err = cluster.Join(cluster.Config{
			Name: n.cfg.Name, Role: cluster.RoleAgent, Bind: n.cfg.Gossip, API: endpoint,
			Peers: n.cfg.Join, SecretKey: pki.GossipKey(n.cfg.Token), Logger: n.log.With("room", "cluster"),
		})
		if err != nil {
			return err
		}
		defer func() {
			if err := pool.Leave(2 * time.Second); err != nil {
				n.log.Warn("leave the gossip pool", "err", err)
			}
		}()
	}
	cred, err := n.credential(ctx, pool, endpoint)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while joining: not a failure
		}
		return err
	}
	j := joined{ln: ln, endpoint: endpoint, pool: pool, cred: cred}
	if n.cfg.ExternalCRI {
		// The runtime host is its own process (skiff cri): the agent
		// comes and goes, the containers stay.
		return n.runAgent(ctx, nil, j)
	}
	criSrv, err := NewCRI(ctx, CRIConfig{
		DataDir: n.cfg.DataDir, StateDir: n.cfg.StateDir, Socket: n.cfg.CRISocket, RegistryConfig: n.cfg.RegistryConfig, Limits: n.cfg.Limits,
		Network: n.cfg.Network, Logger: n.log.With("room", "cri"),
	})
	if err != nil {
		return err
	}
	defer func() { _ = criSrv.Close(context.Background()) }()

	g, ctx := errgroup.WithContext(ctx)
	criDone := make(chan struct{})
	g.Go(func() error {
		defer close(criDone)
		return criSrv.Serve(ctx)
	})
	g.Go(func() error { return n.runAgent(ctx, criDone, j) })
	return g.Wait()
}

// RuntimeLimits bound what the runtime host keeps for its containers; a
// zero field takes cri's default.
type RuntimeLimits struct {
	// DefaultMemoryLimit caps a Wasm container's linear memory when its
	// resources set none, in bytes.
	DefaultMemoryLimit int64
	// ModuleCacheBytes bounds the compiled modules kept in memory.
	ModuleCacheBytes int64
	// LogMaxSize and LogMaxFiles rotate each container's log.
	LogMaxSize  int64
	LogMaxFiles int
	// NoRunc keeps the node from offering the runc runtime (OCI images)
	// even where it could.
	NoRunc bool
}

// CRIConfig is what a node's CRI server needs.
type CRIConfig struct {
	// DataDir holds the images (ImageDir) and the CRI server's records
	// under DataDir/node/cri; StateDir the namespace pins.
	DataDir, StateDir string
	Socket            string
	// RegistryConfig is the path of the image store's registry config
	// (mirrors, plain-HTTP registries, auth); "" for none.
	RegistryConfig string
	Limits         RuntimeLimits
	Network        PodNetwork
	Logger         *slog.Logger
}

// PodNetwork is how a node networks its pods. With CNI set, CNI
// (netns.CNI) is used when the node runs as root and the plugins of
// skiff's own network (bridge, host-local, portmap) are in CNIBinDirs, or
// the user names a conflist directory; otherwise pods get loopback only.
// The zero value is loopback only: a node networks the machine (a bridge,
// routes, iptables rules) only when asked to, as skiff agent and skiff dev
// do unless --no-cni. With CNI and no conflist of the user's, pods wait
// for the agent to give the CRI server the node's pod CIDR
// (UpdateRuntimeConfig).
type PodNetwork struct {
	// CNI networks pods through CNI where the node can.
	CNI bool
	// CNIConfDir is the user's conflist directory (as /etc/cni/net.d);
	// its first *.conflist is the pod network. Empty: skiff's own bridge
	// (skiff0) from the pod CIDR.
	CNIConfDir string
	// CNIBinDirs are where plugins are looked up; nil:
	// netns.DefaultCNIBinDirs.
	CNIBinDirs []string
}

// usesCNI reports whether pods get CNI, and when not, why.
func (p PodNetwork) usesCNI() (bool, string) {
	switch {
	case !p.CNI:
		return false, "pod network: loopback only (--no-cni)"
	case os.Geteuid() != 0:
		return false, "pod network: loopback only: CNI needs root"
	case p.CNIConfDir == "" && !netns.HavePlugins(p.CNIBinDirs):
		dirs := p.CNIBinDirs
		if dirs == nil {
			dirs = netns.DefaultCNIBinDirs
		}
		return false, fmt.Sprintf("pod network: loopback only: the CNI plugins bridge, host-local and portmap are not in %s (Debian package containernetworking-plugins)", strings.Join(dirs, ", "))
	}
	return true, ""
}

// network is the netns.Network of a node whose CNI state goes under
// stateDir/cni; nil: cri's default (loopback only).
func (p PodNetwork) network(stateDir string, log *slog.Logger) (netns.Network, error) {
	if ok, why := p.usesCNI(); !ok {
		if !p.CNI {
			logInfo(log, why)
		} else {
			logWarn(log, why)
		}
		return nil, nil
	}
	if stateDir == "" {
		stateDir = cri.DefaultStateDir
	}
	n, err := netns.NewCNI(netns.CNIConfig{ConfDir: p.CNIConfDir, BinDirs: p.CNIBinDirs, StateDir: filepath.Join(stateDir, "cni")})
	if err != nil {
		return nil, err
	}
	if p.CNIConfDir != "" {
		logInfo(log, "pod network: CNI, the first *.conflist in "+p.CNIConfDir)
	} else {
		logInfo(log, "pod network: CNI, bridge "+netns.DefaultCNIBridge+" once the node has its pod CIDR")
	}
	return n, nil
}

// NewCRI opens a node's runtime host: its image store and the CRI server
// over it, ready to Serve on cfg.Socket. skiff agent and skiff dev run it in
// their process; skiff cri runs it alone, so that the agent can restart
// without touching a container.
func NewCRI(ctx context.Context, cfg CRIConfig) (*cri.Server, error) {
	var regCfg image.Config
	if cfg.RegistryConfig != "" {
		var err error
		if regCfg, err = image.LoadConfig(cfg.RegistryConfig); err != nil {
			return nil, err
		}
	}
	images, err := image.OpenConfig(ImageDir(cfg.DataDir), regCfg)
	if err != nil {
		return nil, err
	}
	root := filepath.Join(cfg.DataDir, "node", "cri")
	wasmRT, err := wasm.New(ctx, wasm.Config{
		CacheDir:           filepath.Join(root, "wasm-cache"),
		DefaultMemoryLimit: uint64(cfg.Limits.DefaultMemoryLimit),
		ModuleCacheBytes:   cfg.Limits.ModuleCacheBytes,
		Logger:             cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("new cri server: %w", err)
	}
	if err := wasmRT.CPULimits(); err != nil && cfg.Logger != nil {
		cfg.Logger.Warn(err.Error())
	}
	runtimes := map[string]skiffrt.Runtime{cri.HandlerWasm: wasmRT.Neutral()}
	// OCI images run in runc where the node can: runc installed, and root
	// (overlay mounts, cgroups). Without it the node still runs Wasm, and
	// a pod with an OCI image fails with a reason that says so.
	var ociRT *oci.Runtime
	if cfg.Limits.NoRunc {
		logInfo(cfg.Logger, "OCI containers are off (--no-runc)")
	} else if os.Geteuid() != 0 {
		logWarn(cfg.Logger, "OCI containers are off: running them needs root")
	} else if ociRT, err = oci.New(oci.Config{Root: filepath.Join(root, "oci"), Log: cfg.Logger}); err != nil {
		logWarn(cfg.Logger, "OCI containers are off: "+err.Error())
	} else {
		runtimes[cri.HandlerRunc] = ociRT
	}
	network, err := cfg.Network.network(cfg.StateDir, cfg.Logger)
	if err != nil {
		wasmRT.Close(ctx)
		if ociRT != nil {
			ociRT.Close(ctx)
		}
		return nil, fmt.Errorf("new cri server: %w", err)
	}
	srv, err := cri.New(ctx, cri.Config{
		Network:     network,
		Runtimes:    runtimes,
		LogMaxSize:  cfg.Limits.LogMaxSize,
		LogMaxFiles: cfg.Limits.LogMaxFiles,
		Socket:      cfg.Socket,
		RootDir:     root,
		StateDir:    cfg.StateDir,
		Images:      images,
		Logger:      cfg.Logger,
	})
	if err != nil {
		wasmRT.Close(ctx)
		if ociRT != nil {
			ociRT.Close(ctx)
		}
		return nil, err
	}
	return srv, nil
}

func logInfo(l *slog.Logger, msg string) {
	if l != nil {
		l.Info(msg)
	}
}

func logWarn(l *slog.Logger, msg string) {
	if l != nil {
		l.Warn(msg)
	}
}

// joined is what the node has once it has joined the cluster: the agent
// API's listener and address, the gossip pool (nil with Config.Server), and
// its certificate.
type joined struct {
	ln       net.Listener
	endpoint string
	pool     *cluster.Pool
	cred     *pki.Credential
}

// runAgent waits for the CRI socket, then registers the node and runs the
// agent and its API.
func (n *Node) runAgent(ctx context.Context, criDone <-chan struct{}, j joined) error {
	ln, endpoint, pool, cred := j.ln, j.endpoint, j.pool, j.cred
	if err := waitForSocket(ctx, n.cfg.CRISocket, criDone); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting: not a failure
		}
		return err
	}
	conn, err := grpc.NewClient("unix://"+n.cfg.CRISocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial CRI socket %s: %w", n.cfg.CRISocket, err)
	}
	defer conn.Close()
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	var hc connect.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: cred.ClientConfig(serversOnly), Protocols: p}}
	base := "https://" + serverHost(n.cfg.Server)
	if pool != nil {
		hc, base = &serverClient{pool: pool, hc: hc.(*http.Client)}, "https://"+poolHost
	}
	ag := agent.New(agent.Config{
		NodeName:         n.cfg.Name,
		Pods:             skiffv1connect.NewPodServiceClient(hc, base),
		Nodes:            skiffv1connect.NewNodeServiceClient(hc, base),
		Events:           skiffv1connect.NewEventServiceClient(hc, base),
		Services:         kinds.Service.Client(hc, base),
		Runtime:          runtimeapi.NewRuntimeServiceClient(conn),
		Images:           runtimeapi.NewImageServiceClient(conn),
		LogDir:           filepath.Join(n.cfg.DataDir, "node", "logs"),
		VolumeDir:        filepath.Join(n.cfg.DataDir, "node", "volumes"),
		AllowedHostPaths: n.cfg.AllowedHostPaths,
		Endpoint:         endpoint,
		NodeIP:           n.cfg.NodeIP,
		MaxPods:          n.cfg.MaxPods,
		Logger:           n.log.With("room", "agent"),
		Version:          n.cfg.Version,
		Dialer:           podDialer{},
	})
	g, ctx := errgroup.WithContext(ctx)
	if ok, _ := n.cfg.Network.usesCNI(); ok {
		px, routes, err := n.newProxy()
		if err != nil {
			return err
		}
		g.Go(func() error {
			proxy.Run(ctx, proxy.RunConfig{
				Services: kinds.Service.Client(hc, base), Endpoints: kinds.Endpoints.Client(hc, base), Nodes: kinds.Node.Client(hc, base),
				Proxier: px, Routes: routes, Logger: n.log.With("room", "proxy"),
			})
			return nil
		})
	}
	// Only the cluster's servers may call the agent.
	agentTLS := cred.ServerConfig(tls.RequireAndVerifyClientCert, serversOnly)
	g.Go(func() error { return serve.Run(ctx, tls.NewListener(ln, agentTLS), ag.Handler(), serve.DefaultLimits) })
	g.Go(func() error {
		pki.Renew(ctx, cred, n.renew(pool, endpoint, cred), n.log.With("room", "pki"))
		return nil
	})
	g.Go(func() error {
		if err := n.register(ctx, ag); err != nil {
			if ctx.Err() != nil {
				return nil // stopped while registering: not a failure
			}
			return err
		}
		close(n.ready)
		n.log.Info("skiff node is up", "node", n.cfg.Name, "server", n.cfg.Server, "cri", n.cfg.CRISocket, "agent", ln.Addr().String())
		return ag.Run(ctx)
	})
	return g.Wait()
}

// register registers the node, retrying while the server cannot be reached
// (an agent may start before its server).
func (n *Node) register(ctx context.Context, ag *agent.Agent) error {
	wait := 100 * time.Millisecond
	for {
		err := ag.Register(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		n.log.Warn("register with the server; will retry", "server", n.cfg.Server, "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// waitForSocket waits until the CRI server accepts connections.
func waitForSocket(ctx context.Context, path string, failed <-chan struct{}) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cri server did not open %s within 10s", path)
		}
		select {
		case <-failed:
			return errors.New("cri server stopped before it opened its socket")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// newProxy makes the node's service proxy and routes; nothing touches the
// kernel before their first sync.
func (n *Node) newProxy() (*proxy.Proxier, *proxy.Routes, error) {
	px, err := proxy.New(proxy.Config{ClusterCIDR: n.cfg.ClusterCIDR, ServiceCIDR: n.cfg.ServiceCIDR, Logger: n.log.With("room", "proxy")})
	if err != nil {
		return nil, nil, fmt.Errorf("node: service proxy: %w", err)
	}
	routes, err := proxy.NewRoutes(proxy.RoutesConfig{NodeName: n.cfg.Name, ServiceCIDR: n.cfg.ServiceCIDR})
	if err != nil {
		return nil, nil, fmt.Errorf("node: routes: %w", err)
	}
	return px, routes, nil
}
