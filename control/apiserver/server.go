package apiserver

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
)

// Config is what New needs.
type Config struct {
	Store  Store
	Logger *slog.Logger
	// Now is the clock for creation and deletion timestamps; time.Now when nil.
	Now func() time.Time
	// Members lists the cluster's servers and agents (ClusterService.Members);
	// the call is Unimplemented when nil.
	Members func(ctx context.Context) ([]*skiffv1.Member, error)
	// HTTPClient reaches the agents for container logs; a plain client when
	// nil. Agents, when set, is used instead.
	HTTPClient *http.Client
	// Agents returns a client of the agent of node at endpoint (the
	// node's status.agentEndpoint, which only its agent sets, from its
	// certificate); the client must refuse any peer but that agent.
	Agents func(node, endpoint string) skiffv1connect.AgentServiceClient
	// AgentStreams reaches the agents for exec and port-forward
	// (WebSockets, stream.go); plain HTTP/1.1 to http://endpoint when nil.
	AgentStreams AgentStreams
	// Health says whether this server can serve: /healthz answers 503 with
	// its error (a failed store, say) and 200 when it returns nil. Nil:
	// always healthy.
	Health func() error
	// Network is where cluster IPs, node ports and nodes' pod CIDRs are
	// allocated from; zero fields take their defaults. New panics when it
	// does not Validate: check it first (cmd/skiff's flags do).
	Network Network
	// Auth authenticates every call and authorizes it by the caller's
	// role (auth.go, authz.go). Nil leaves the API open to anonymous
	// callers: only for tests of other features; control/server always
	// sets it.
	Auth *AuthConfig
	// Tolerations are the not-ready and unreachable tolerations every new
	// pod gets unless it has its own (DefaultTolerationSeconds when nil).
	Tolerations Tolerations
}

// Server is the API server: Connect handlers over the store, one service
// per kind of the kinds registry.
type Server struct {
	log     *slog.Logger
	b       *backend
	pods    *podService
	health  func() error
	members func(ctx context.Context) ([]*skiffv1.Member, error)
	auth    *AuthConfig
	authz   *authorizer // nil without auth

	agentStreams AgentStreams
	streams      chan struct{} // a seat per exec or port-forward stream
}

// agentDialer returns a client for the agent of a node at a host:port.
type agentDialer func(node, endpoint string) skiffv1connect.AgentServiceClient

// New returns a Server over cfg.Store.
func New(cfg Config) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	b := &backend{store: cfg.Store, now: now, tolerations: cfg.Tolerations}
	var authz *authorizer
	if cfg.Auth != nil {
		authz = &authorizer{log: log}
		b.auth = authz
	}
	if err := cfg.Network.Validate(); err != nil {
		panic(fmt.Sprintf("apiserver: %v", err)) // the caller's flags let it through
	}
	net := cfg.Network.withDefaults()
	b.strategies = map[*kinds.Kind]*strategy{
		kinds.Pod:        podStrategy(b),
		kinds.Node:       nodeStrategy(net, log, now),
		kinds.Namespace:  namespaceStrategy(),
		kinds.Event:      eventStrategy(),
		kinds.Service:    serviceStrategy(net),
		kinds.Endpoints:  endpointsStrategy(),
		kinds.Deployment: deploymentStrategy(),
		kinds.ReplicaSet: replicaSetStrategy(),
	}
	agents := cfg.Agents
	if agents == nil {
		agents = func(_, endpoint string) skiffv1connect.AgentServiceClient {
			return skiffv1connect.NewAgentServiceClient(hc, "http://"+endpoint)
		}
	}
	agentStreams := cfg.AgentStreams
	if agentStreams == nil {
		plain := &http.Client{Transport: &http.Transport{TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: 30 * time.Second}}
		agentStreams = func(_, endpoint string) (*http.Client, string) { return plain, "http://" + endpoint }
	}
	return &Server{
		agentStreams: agentStreams,
		streams:      make(chan struct{}, maxStreamsInFlightWS),
		log:          log,
		health:       cfg.Health,
		members:      cfg.Members,
		auth:         cfg.Auth,
		authz:        authz,
		b:            b,
		pods: &podService{
			generic: kinds.Pod.GenericHandler(b).(generic),
			b:       b,
			agents:  agents,
		},
	}
}

// Init creates what every cluster has from the start: the default
// namespace, and the bootstrap token once in the cluster's life. It is safe
// to call on every start.
func (s *Server) Init(ctx context.Context) error {
	if err := s.b.ensureDefault(ctx); err != nil {
		return err
	}
	if s.auth != nil && s.auth.BootstrapToken != "" {
		return storeBootstrapToken(ctx, s.b.store, s.auth.BootstrapToken, s.b.now())
	}
	return nil
}

// Handler serves the API's Connect, gRPC and gRPC-Web routes: each kind's
// service from the registry, with Pod and Node adding their subresources,
// and the cluster and auth services. With Config.Auth every call but
// /healthz is authenticated first, then authorized by the caller's role.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	opts := handlerOptions(&s.b.events)
	if s.authz != nil {
		opts = append(opts, connect.WithInterceptors(s.authz))
	}
	custom := map[*kinds.Kind]any{
		kinds.Pod: s.pods,
		kinds.Node: &nodeService{
			GenericService: kinds.Node.GenericHandler(s.b).(*kinds.GenericService[skiffv1.Node, skiffv1.NodeList, skiffv1.NodeWatchEvent, *skiffv1.Node, *skiffv1.NodeList, *skiffv1.NodeWatchEvent]),
			b:              s.b,
		},
		kinds.Deployment: &deploymentService{
			GenericService: kinds.Deployment.GenericHandler(s.b).(*kinds.GenericService[skiffv1.Deployment, skiffv1.DeploymentList, skiffv1.DeploymentWatchEvent, *skiffv1.Deployment, *skiffv1.DeploymentList, *skiffv1.DeploymentWatchEvent]),
			b:              s.b,
		},
		kinds.ReplicaSet: &replicaSetService{
			GenericService: kinds.ReplicaSet.GenericHandler(s.b).(*kinds.GenericService[skiffv1.ReplicaSet, skiffv1.ReplicaSetList, skiffv1.ReplicaSetWatchEvent, *skiffv1.ReplicaSet, *skiffv1.ReplicaSetList, *skiffv1.ReplicaSetWatchEvent]),
			b:              s.b,
		},
	}
	for _, k := range kinds.All() {
		var (
			path string
			h    http.Handler
			err  error
		)
		if impl, ok := custom[k]; ok {
			path, h, err = k.Mount(impl, opts...)
		} else {
			path, h, err = k.Handler(s.b, opts...)
		}
		if err != nil {
			panic(fmt.Sprintf("apiserver: %v", err)) // a registry entry without its service: a build mistake
		}
		mux.Handle(path, h)
	}
	mux.Handle(skiffv1connect.NewClusterServiceHandler(s.cluster(), opts...))
	tokenClock := s.b.now
	if s.auth != nil && s.auth.Now != nil {
		tokenClock = s.auth.Now // expiry is checked by this clock
	}
	mux.Handle(skiffv1connect.NewAuthServiceHandler(&authService{b: s.b, z: s.authz, now: tokenClock}, opts...))
	mux.HandleFunc("/healthz", s.healthz)
	s.registerStreams(mux)
	h := limitInFlight(mux, maxUnaryInFlight, maxStreamsInFlight)
	if s.auth == nil {
		return h
	}
	// Authentication first: a caller without credentials is refused
	// before its body is read or it takes a seat.
	return &authenticator{cfg: s.auth, store: s.b.store, log: s.log, errw: connect.NewErrorWriter(), next: h}
}

// healthz answers 200 "ok" while the server is healthy, and 503 with the
// reason when it is not, for example while it stops after its store failed.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	if s.health != nil {
		if err := s.health(); err != nil {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "unhealthy: %v\n", err)
			return
		}
	}
	_, _ = w.Write([]byte("ok\n"))
}
