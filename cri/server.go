package cri

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/netns"
	skiffrt "skiff.dev/skiff/runtime"
	"skiff.dev/skiff/runtime/image"
)

// Defaults for Config.
const (
	DefaultSocket   = "/run/skiff/cri.sock"
	DefaultStateDir = "/run/skiff"
)

// imageGCInterval is how often Serve collects unused images past the
// disk threshold, besides after each pull (the kubelet checks every 5
// minutes too).
const imageGCInterval = 5 * time.Minute

// collectImages runs image GC every interval until ctx ends.
func (s *Server) collectImages(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			gctx, cancel := context.WithTimeout(ctx, time.Minute)
			if _, err := s.svc.gcImages(gctx); err != nil {
				s.svc.log.Warn("image gc", "err", err)
			}
			cancel()
		}
	}
}

// namespacePoolSize is how many spare network namespaces a node keeps
// made ahead (netns.Pool), so that a sandbox's costs two mounts; and, on
// skiff's own CNI network, how many it keeps attached to it ahead
// (netns.CNIPool), so that a sandbox does not wait for CNI ADD either.
const namespacePoolSize = 4

// gracePeriod bounds how long Serve waits for calls in flight when its
// context ends.
const gracePeriod = 5 * time.Second

// Config configures a Server.
type Config struct {
	// Socket is the unix socket to serve on. Default DefaultSocket.
	Socket string
	// RootDir holds persistent node state: cri.db (bbolt). Required.
	RootDir string
	// StateDir holds state that must not outlive a reboot: netns/<sandbox-id>
	// pins. Default DefaultStateDir.
	StateDir string
	// Images is the node's image store. Required.
	Images *image.Store
	// Runtimes are the node's container runtimes by CRI runtime handler
	// ("wasm": runtime/wasm, "runc": runtime/oci), as containerd resolves
	// a sandbox's handler. A sandbox that names no handler has each
	// container run by its image's kind: a Wasm module in "wasm", an OCI
	// container image in "runc". At least one is required. The server
	// closes them when it closes (not when New fails: they are still the
	// caller's then).
	Runtimes map[string]skiffrt.Runtime
	// Logger receives the server's logs (keys: pod, sandbox, container). Nil: discard.
	Logger *slog.Logger
	// LogMaxSize is the size in bytes past which a container's log file is
	// rotated (the kubelet's containerLogMaxSize). 0: DefaultLogMaxSize.
	LogMaxSize int64
	// LogMaxFiles is how many files of a container's log are kept, the
	// live one included (containerLogMaxFiles); at least 2. 0:
	// DefaultLogMaxFiles.
	LogMaxFiles int
	// StreamingAddress is where the streaming server that Exec and
	// PortForward return URLs of listens: a loopback host:port. Default
	// DefaultStreamingAddress (a port of the kernel's choosing).
	StreamingAddress string
	// Network attaches pods to the node's network: netns.CNI gives them
	// addresses (once UpdateRuntimeConfig gives it the pod CIDR, or from
	// the user's conflist). Nil: netns.Loopback, loopback only.
	Network netns.Network
}

// Server serves CRI on a unix socket.
type Server struct {
	socket string
	svc    *service
	grpc   *grpc.Server

	lock *stateLock
	pool *netns.Pool // spare network namespaces; nil without root
	// attached are spare namespaces attached to the pod network; nil
	// without root or without CNI.
	attached *netns.CNIPool

	closeOnce sync.Once
	closeErr  error
}

// New opens the node state under cfg.RootDir, reconciles it with what
// survived a restart, and returns a server ready to Serve.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.RootDir == "" {
		return nil, errors.New("new cri server: Config.RootDir is required")
	}
	if cfg.Images == nil {
		return nil, errors.New("new cri server: Config.Images is required")
	}
	if len(cfg.Runtimes) == 0 {
		return nil, errors.New("new cri server: Config.Runtimes is empty")
	}
	if cfg.Socket == "" {
		cfg.Socket = DefaultSocket
	}
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	if cfg.LogMaxSize < 0 || cfg.LogMaxFiles < 0 || cfg.LogMaxFiles == 1 {
		return nil, fmt.Errorf("new cri server: Config.LogMaxSize (%d) must not be negative and Config.LogMaxFiles (%d) must be at least 2", cfg.LogMaxSize, cfg.LogMaxFiles)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.RootDir, 0o700); err != nil {
		return nil, fmt.Errorf("new cri server: %w", err)
	}
	// Before anything is cleaned up: a second node on this state dir
	// would take the running one's namespace pins for leftovers.
	lock, err := lockStateDir(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("new cri server: %w", err)
	}
	nsDir := filepath.Join(cfg.StateDir, "netns")
	var pool *netns.Pool
	if os.Geteuid() == 0 {
		if pool, err = netns.NewPool(nsDir, namespacePoolSize); err != nil {
			lock.release()
			return nil, fmt.Errorf("new cri server: %w", err)
		}
	}
	network := cfg.Network
	if network == nil {
		network = netns.Loopback{}
	}
	var attached *netns.CNIPool
	var attachedDep attachedNamespaces
	if cni, ok := network.(*netns.CNI); ok && pool != nil {
		if attached, err = netns.NewCNIPool(nsDir, cni, namespacePoolSize, log.With("room", "netns")); err != nil {
			pool.Close()
			lock.release()
			return nil, fmt.Errorf("new cri server: %w", err)
		}
		attachedDep = attached
	}
	closePools := func() {
		if attached != nil {
			attached.Close()
		}
		if pool != nil {
			pool.Close()
		}
	}
	svc, err := newService(deps{
		log:        log,
		rootDir:    cfg.RootDir,
		runtimes:   maps.Clone(cfg.Runtimes),
		images:     cfg.Images,
		namespaces: hostNamespaces{dir: nsDir, pool: pool},
		network:    network,
		attached:   attachedDep,
		logs:       logRotation{maxSize: cfg.LogMaxSize, maxFiles: cfg.LogMaxFiles},
	})
	if err != nil {
		closePools()
		lock.release()
		return nil, fmt.Errorf("new cri server: %w", err)
	}
	if svc.streams, err = newStreamServer(svc, cfg.StreamingAddress, log.With("room", "streaming")); err != nil {
		svc.close(ctx)
		closePools()
		lock.release()
		return nil, fmt.Errorf("new cri server: %w", err)
	}
	return &Server{socket: cfg.Socket, svc: svc, grpc: newGRPCServer(svc, log), lock: lock, pool: pool, attached: attached}, nil
}

func newGRPCServer(svc *service, log *slog.Logger) *grpc.Server {
	g := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		if err != nil {
			err = toStatus(err)
			log.Debug("cri call failed", "method", info.FullMethod, "duration", time.Since(start), "err", err)
			return nil, err
		}
		log.Debug("cri call", "method", info.FullMethod, "duration", time.Since(start))
		return resp, nil
	}))
	runtime.RegisterRuntimeServiceServer(g, svc)
	runtime.RegisterImageServiceServer(g, svc)
	return g
}

// Serve listens on the socket (creating its directory, removing a stale
// socket, mode 0600) and serves until ctx ends, then stops gracefully
// (calls in flight get gracePeriod) and removes the socket. Serve may be
// called once. It returns nil when ctx ended or Close was called.
func (s *Server) Serve(ctx context.Context) error {
	l, err := listen(s.socket)
	if err != nil {
		return fmt.Errorf("serve cri: %w", err)
	}
	defer os.Remove(s.socket)
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(l) }()
	streamErr := make(chan error, 1)
	go func() { streamErr <- s.svc.streams.serve() }()
	defer func() { s.svc.streams.close(); <-streamErr }()
	gcDone := make(chan struct{})
	gcCtx, stopGC := context.WithCancel(ctx)
	go func() {
		defer close(gcDone)
		s.collectImages(gcCtx, imageGCInterval)
	}()
	defer func() { stopGC(); <-gcDone }()
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("serve cri: %w", err)
		}
		return nil
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(gracePeriod):
		s.grpc.Stop()
		<-stopped
	}
	<-errc
	return nil
}

// listen makes the unix socket at path.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if info, err := os.Lstat(path); err == nil {
		if info.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use by another server", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Close releases the server's resources: it stops serving, closes the
// runtime and the state database, and tears down the spare namespaces. It does not stop containers in the CRI
// sense: their records keep the state they had (a later New reports the
// ones that were running as exited, reason "Unknown"), but Wasm containers
// run inside this process, so closing the runtime ends them. Close is
// idempotent.
func (s *Server) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.grpc.Stop()
		s.svc.streams.close()
		s.closeErr = s.svc.close(ctx)
		if s.attached != nil {
			s.closeErr = errors.Join(s.closeErr, s.attached.Close())
		}
		if s.pool != nil {
			s.closeErr = errors.Join(s.closeErr, s.pool.Close())
		}
		s.lock.release()
	})
	return s.closeErr
}
