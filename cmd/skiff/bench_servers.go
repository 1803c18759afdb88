package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/cluster/pki"
	"skiff.dev/skiff/control/server"
)

// localServer is the server a bench starts when it is given none.
type localServer struct {
	addr, dir string
	cfg       clientConfig // the admin's, to the leader
	stop      func() error
}

// startBenchServers starts n servers in this process: one alone, or a
// cluster of n on 127.0.0.1 to 127.0.0.n, and returns the leader's address
// once the cluster takes writes. hold, when not nil, keeps every server's
// scheduler from placing pods until it is closed (server.Config.SchedulerHold).
func startBenchServers(ctx context.Context, logOut io.Writer, n int, hold <-chan struct{}) (*localServer, error) {
	dir, err := os.MkdirTemp("", "skiff-bench-")
	if err != nil {
		return nil, fmt.Errorf("create the bench's data dir: %w", err)
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelError}))
	if n > 1 {
		// Stopped together, the servers of a cluster each see the others
		// go, and Raft logs that as errors: what Run returns is reported.
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	var (
		dones []chan error
		addrs []string
	)
	stop := func() error {
		cancel()
		var errs []error
		for _, d := range dones {
			errs = append(errs, <-d)
		}
		return errors.Join(append(errs, os.RemoveAll(dir))...)
	}
	cfgs := []server.Config{{DataDir: dir, Listen: "127.0.0.1:0", Logger: log, SchedulerHold: hold}}
	token := ""
	if n > 1 {
		token = pki.NewToken()
		cfgs = cfgs[:0]
		var gossip []string
		for i := 1; i <= n; i++ {
			host := fmt.Sprintf("127.0.0.%d", i)
			g, err := freePort(host, true)
			if err != nil {
				return nil, errors.Join(err, stop())
			}
			gossip = append(gossip, g)
		}
		for i := 1; i <= n; i++ {
			host := fmt.Sprintf("127.0.0.%d", i)
			var join []string
			for j, g := range gossip {
				if j != i-1 {
					join = append(join, g)
				}
			}
			cfgs = append(cfgs, server.Config{
				DataDir: filepath.Join(dir, host), Listen: host + ":0", RaftListen: host + ":0", Gossip: gossip[i-1], Join: join,
				BootstrapExpect: n, Token: token, Logger: log, SchedulerHold: hold,
			})
		}
	}
	// All at once: a server of several is ready only once it has met
	// another.
	var srvs []*server.Server
	for _, cfg := range cfgs {
		srv, err := server.New(cfg)
		if err != nil {
			return nil, errors.Join(err, stop())
		}
		done := make(chan error, 1)
		dones = append(dones, done)
		srvs = append(srvs, srv)
		go func() { done <- srv.Run(ctx) }()
	}
	for i, srv := range srvs {
		select {
		case <-srv.Ready():
			addrs = append(addrs, srv.Addr())
		case err := <-dones[i]:
			dones[i] <- err
			if err == nil {
				err = ctx.Err()
			}
			return nil, errors.Join(fmt.Errorf("start the bench's server: %w", err), stop())
		}
	}
	a := srvs[0].Admin()
	cfg := clientConfig{Server: a.Server, Token: a.Token, CA: string(a.CA)}
	leader := addrs[0]
	if n > 1 {
		if leader, err = waitBenchLeader(ctx, cfg); err != nil {
			return nil, errors.Join(err, stop())
		}
		cfg.Server = leader
	}
	return &localServer{addr: leader, dir: dir, cfg: cfg, stop: stop}, nil
}

// freePort returns host:port with a port no one listens on now, on TCP
// and, for a gossip address (memberlist uses both), on UDP too. The port is
// picked below Linux's ephemeral range (32768 and up), where every
// listener on port 0 gets its own: a port from there could be handed to one
// of them before the caller listens on it.
func freePort(host string, udp bool) (string, error) {
	for range 100 {
		addr := net.JoinHostPort(host, strconv.Itoa(20000+rand.IntN(12000)))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ln.Close()
		if !udp {
			return addr, nil
		}
		if pc, err := net.ListenPacket("udp", addr); err == nil {
			pc.Close()
			return addr, nil
		}
	}
	return "", fmt.Errorf("find a free port on %s: none free after 100 tries", host)
}

// waitBenchLeader waits until the cluster has a leader that has created
// the default namespace, and returns the leader's API address.
func waitBenchLeader(ctx context.Context, cfg clientConfig) (string, error) {
	tr, err := cfg.transport()
	if err != nil {
		return "", err
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: tr}
	cs := skiffv1connect.NewClusterServiceClient(hc, cfg.baseURL())
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		res, err := cs.Members(ctx, connect.NewRequest(&skiffv1.MembersRequest{}))
		if err == nil {
			for _, m := range res.Msg.GetMembers() {
				if m.GetRaftRole() != "leader" || m.GetApiAddress() == "" {
					continue
				}
				ns := skiffv1connect.NewNamespaceServiceClient(hc, (clientConfig{Server: m.GetApiAddress(), CA: cfg.CA}).baseURL())
				if _, err := ns.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: benchNamespace})); err == nil {
					return m.GetApiAddress(), nil
				}
			}
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return "", fmt.Errorf("the bench's cluster elected no leader: %w", ctx.Err())
		}
	}
}
