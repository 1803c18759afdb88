package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/control/api/events"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/apiserver"
	"skiff.dev/skiff/control/controllers"
	"skiff.dev/skiff/control/scheduler"
	"skiff.dev/skiff/control/store"
	"skiff.dev/skiff/cri"
	"skiff.dev/skiff/node/agent"
	"skiff.dev/skiff/runtime/image"
)

// devOptions are skiff dev's flags.
type devOptions struct {
	dataDir   string
	stateDir  string
	listen    string
	criSocket string
	nodeName  string
	logLevel  string
	eventTTL  time.Duration
	// ready, when set, is called with the API address once everything runs.
	ready func(apiAddr string)
	// logOut is where logs go; stderr when nil.
	logOut io.Writer
}

func newDevCmd() *cobra.Command {
	o := &devOptions{}
	host, _ := os.Hostname()
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a one-node cluster (control plane and agent) in this process",
		Long: `Dev runs a single-server control plane (Raft store, API server, scheduler) and one
node agent with its CRI server, all in this process, with all state under
--data-dir. It runs until interrupted. It needs root: each pod gets its own
network namespace.`,
		Example: `  skiff dev --data-dir /var/lib/skiff
  skiff image import hello examples/hello/hello.wasm
  skiff apply -f examples/hello/pod.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runDev(ctx, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", defaultDataDir, "directory for all persistent state (store, images, logs)")
	f.StringVar(&o.stateDir, "state-dir", "/run/skiff", "directory for runtime state that ends with the machine (pod network namespaces)")
	f.StringVar(&o.listen, "listen", defaultServer, "address the API server listens on")
	f.StringVar(&o.criSocket, "cri-socket", "/run/skiff/cri.sock", "unix socket of the node's CRI server")
	f.StringVar(&o.nodeName, "node-name", strings.ToLower(host), "name of this node")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.DurationVar(&o.eventTTL, "event-ttl", controllers.DefaultEventTTL, "how long events are kept after they last happened")
	return cmd
}

// runDev runs the control plane and one agent until ctx ends.
func runDev(ctx context.Context, o *devOptions) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	out := o.logOut
	if out == nil {
		out = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level}))
	if o.eventTTL <= 0 {
		return fmt.Errorf("--event-ttl: invalid value %s: must be positive", o.eventTTL)
	}
	if os.Geteuid() != 0 {
		return errors.New("skiff dev needs root: every pod gets its own network namespace")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Control plane.
	st, err := store.Open(ctx, store.Config{Dir: filepath.Join(o.dataDir, "server"), BindAddr: "127.0.0.1:0", Logger: log.With("room", "store")})
	if err != nil {
		return err
	}
	defer st.Close()
	api := apiserver.New(apiserver.Config{Store: st, Logger: log.With("room", "apiserver")})
	if err := api.Init(ctx); err != nil {
		return fmt.Errorf("initialise the API: %w", err)
	}
	apiLn, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", o.listen, err)
	}
	apiAddr := apiLn.Addr().String()
	stopAPI := serveHTTP(apiLn, api.Handler(), log)
	defer stopAPI()
	hc := &http.Client{}
	base := "http://" + apiAddr
	pods := skiffv1connect.NewPodServiceClient(hc, base)
	nodes := skiffv1connect.NewNodeServiceClient(hc, base)
	evs := skiffv1connect.NewEventServiceClient(hc, base)
	leaderDone := whileLeader(ctx, st.LeaderCh(), func(ctx context.Context) {
		rec := events.NewRecorder(events.Config{Events: evs, Component: "scheduler", Logger: log.With("room", "scheduler")})
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() { rec.Run(ctx) })
		wg.Go(func() {
			(&controllers.EventTTL{Events: evs, TTL: o.eventTTL, Logger: log.With("room", "controllers")}).Run(ctx)
		})
		_ = scheduler.New(scheduler.Config{Pods: pods, Nodes: nodes, Events: rec, Logger: log.With("room", "scheduler")}).Run(ctx)
	})
	defer func() { cancel(); <-leaderDone }()

	// Node.
	images, err := image.Open(imageDir(o.dataDir))
	if err != nil {
		return err
	}
	criSrv, err := cri.New(ctx, cri.Config{
		Socket:   o.criSocket,
		RootDir:  filepath.Join(o.dataDir, "node", "cri"),
		StateDir: o.stateDir,
		Images:   images,
		Logger:   log.With("room", "cri"),
	})
	if err != nil {
		return err
	}
	criDone := make(chan error, 1)
	go func() { criDone <- criSrv.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-criDone; err != nil {
			log.Warn("cri server", "err", err)
		}
		_ = criSrv.Close(context.Background())
	}()
	if err := waitForSocket(ctx, o.criSocket, criDone); err != nil {
		return err
	}
	conn, err := grpc.NewClient("unix://"+o.criSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial CRI socket %s: %w", o.criSocket, err)
	}
	defer conn.Close()
	agentLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for the agent API: %w", err)
	}
	ag := agent.New(agent.Config{
		NodeName: o.nodeName,
		Pods:     pods,
		Nodes:    nodes,
		Events:   evs,
		Runtime:  runtimeapi.NewRuntimeServiceClient(conn),
		Images:   runtimeapi.NewImageServiceClient(conn),
		LogDir:   filepath.Join(o.dataDir, "node", "logs"),
		Endpoint: agentLn.Addr().String(),
		Logger:   log.With("room", "agent"),
		Version:  version,
	})
	stopAgentAPI := serveHTTP(agentLn, ag.Handler(), log)
	defer stopAgentAPI()
	if err := ag.Register(ctx); err != nil {
		return err
	}
	agentDone := make(chan error, 1)
	go func() { agentDone <- ag.Run(ctx) }()
	defer func() { cancel(); <-agentDone }()

	log.Info("skiff dev is up", "api", apiAddr, "cri", o.criSocket, "node", o.nodeName, "data", o.dataDir)
	if o.ready != nil {
		o.ready(apiAddr)
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-agentDone:
		agentDone <- err
		return fmt.Errorf("agent stopped: %w", err)
	case err := <-criDone:
		criDone <- err
		return fmt.Errorf("cri server stopped: %w", err)
	}
}

// whileLeader runs loop each time this server becomes the Raft leader and
// stops it when leadership is lost or ctx ends. The returned channel closes
// when it has stopped for good.
func whileLeader(ctx context.Context, leader <-chan bool, loop func(context.Context)) <-chan struct{} {
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

// waitForSocket waits until the CRI server accepts connections.
func waitForSocket(ctx context.Context, path string, failed <-chan error) error {
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil
		}
		select {
		case err := <-failed:
			return fmt.Errorf("cri server: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if i > 500 {
			return fmt.Errorf("cri server did not open %s within 10s", path)
		}
	}
}
