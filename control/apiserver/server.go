package apiserver

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

// Config is what New needs.
type Config struct {
	Store  Store
	Logger *slog.Logger
	// Now is the clock for creation timestamps; time.Now when nil.
	Now func() time.Time
	// HTTPClient reaches the agents for container logs; a plain client when nil.
	HTTPClient *http.Client
}

// Server is the API server: Connect handlers over the store.
type Server struct {
	log        *slog.Logger
	pods       *podService
	nodes      *nodeService
	namespaces *namespaceService
}

// agentDialer returns a client for the agent at a host:port.
type agentDialer func(endpoint string) skiffv1connect.AgentServiceClient

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
	r := &resources{store: cfg.Store, now: now}
	s := &Server{
		log:        log,
		nodes:      &nodeService{r: r},
		namespaces: &namespaceService{r: r},
		pods: &podService{r: r, agents: func(endpoint string) skiffv1connect.AgentServiceClient {
			return skiffv1connect.NewAgentServiceClient(hc, "http://"+endpoint)
		}},
	}
	r.nsExists = s.namespaces.exists
	return s
}

// Init creates what every cluster has from the start: the default namespace.
// It is safe to call on every start.
func (s *Server) Init(ctx context.Context) error {
	return s.namespaces.ensureDefault(ctx)
}

// Handler serves the API's Connect, gRPC and gRPC-Web routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	opts := handlerOptions()
	mux.Handle(skiffv1connect.NewPodServiceHandler(s.pods, opts...))
	mux.Handle(skiffv1connect.NewNodeServiceHandler(s.nodes, opts...))
	mux.Handle(skiffv1connect.NewNamespaceServiceHandler(s.namespaces, opts...))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	return limitInFlight(mux, maxUnaryInFlight, maxStreamsInFlight)
}
