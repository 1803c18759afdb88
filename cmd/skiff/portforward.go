package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/spf13/cobra"
)

// maxForwardConns bounds the connections port-forward relays at once.
const maxForwardConns = 64

func newPortForwardCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "port-forward POD [LOCAL]:REMOTE",
		Short: "Forward a local port to a port of a pod",
		Long: `Listen on 127.0.0.1:LOCAL and relay each connection to port REMOTE of the
pod, as kubectl port-forward does: the connection is made inside the pod's
network namespace, on its node, through the API server and the node's
agent (one WebSocket per connection). LOCAL 0 or left out (":8080")
picks a free port; REMOTE alone ("8080") listens on the same port. It runs
until interrupted. Works for Wasm and OCI pods alike.`,
		Example: `  skiff port-forward web 8080:8080
  skiff port-forward web :8080
  skiff port-forward -n shop api 9000:80`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			local, remote, err := parsePorts(args[1])
			if err != nil {
				return err
			}
			cfg, err := g.clientConfig()
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(local)))
			if err != nil {
				return fmt.Errorf("listen on 127.0.0.1:%d: %w", local, err)
			}
			defer ln.Close()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			fmt.Fprintf(cmd.OutOrStdout(), "Forwarding from %s -> %d\n", ln.Addr(), remote)
			go func() { <-ctx.Done(); ln.Close() }()
			ns, pod := g.namespaceOr(), args[0]
			q := url.Values{"port": {strconv.Itoa(remote)}}
			seats := make(chan struct{}, maxForwardConns)
			var wg sync.WaitGroup
			defer wg.Wait()
			errOut := &lockedWriter{w: cmd.ErrOrStderr()}
			for {
				conn, err := ln.Accept()
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				select {
				case seats <- struct{}{}:
				default:
					conn.Close()
					errOut.printf("error: %d connections are being forwarded already; refused one\n", maxForwardConns)
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { <-seats }()
					defer conn.Close()
					c, err := dialPod(ctx, cfg, ns, pod, "portforward", q, nil)
					if err != nil {
						errOut.printf("error: %v\n", err)
						return
					}
					defer c.CloseNow()
					if err := relayConn(ctx, conn, c); err != nil {
						errOut.printf("error: forward to port %d of pod %s: %v\n", remote, pod, err)
					}
				}()
			}
		},
	}
	cmd.Flags().StringVarP(&g.namespace, "namespace", "n", "", "namespace (default \"default\")")
	return cmd
}

// parsePorts parses [LOCAL]:REMOTE, or REMOTE alone (the same port locally).
func parsePorts(s string) (local, remote int, err error) {
	l, r, found := strings.Cut(s, ":")
	if !found {
		l, r = s, s
	}
	remote, err = strconv.Atoi(r)
	if err != nil || remote < 1 || remote > 65535 {
		return 0, 0, fmt.Errorf("port %q: REMOTE must be a port number (1-65535)", s)
	}
	if l == "" {
		return 0, remote, nil
	}
	local, err = strconv.Atoi(l)
	if err != nil || local < 0 || local > 65535 {
		return 0, 0, fmt.Errorf("port %q: LOCAL must be a port number (0-65535; 0 or left out: any free port)", s)
	}
	return local, remote, nil
}

// relayConn relays conn's bytes over c both ways until either ends. A
// close with a reason other than a normal close is returned as the error.
func relayConn(ctx context.Context, conn net.Conn, c *websocket.Conn) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer cancel()
		buf := make([]byte, 32<<10)
		for {
			n, err := conn.Read(buf)
			if n > 0 {
				wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
				werr := c.Write(wctx, websocket.MessageBinary, buf[:n])
				wcancel()
				if werr != nil {
					return
				}
			}
			if err != nil {
				_ = c.Close(websocket.StatusNormalClosure, "")
				return
			}
		}
	}()
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) && ce.Code != websocket.StatusNormalClosure && ce.Code != websocket.StatusGoingAway {
				return errors.New(ce.Reason)
			}
			return nil
		}
		_ = conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := conn.Write(msg); err != nil {
			return nil
		}
	}
}

// lockedWriter serialises writes from the connections' goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format, args...)
}
