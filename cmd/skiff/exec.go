package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/coder/websocket"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"skiff.dev/skiff/control/api/stream"
)

// exitError is a command's exit code that skiff exits with (exec), as
// kubectl does, without printing anything more.
type exitError struct{ code int }

func (e exitError) Error() string { return "command terminated with exit code " + strconv.Itoa(e.code) }

func newExecCmd(g *globals) *cobra.Command {
	var (
		container  string
		stdin, tty bool
	)
	cmd := &cobra.Command{
		Use:   "exec [-i] [-t] POD [-c CONTAINER] -- COMMAND [ARGS...]",
		Short: "Run a command in a running container of a pod",
		Long: `Run a command in a running container of a pod, as kubectl exec does: its
output is printed, its exit code becomes skiff's. With -i, skiff's stdin is
the command's; with -t, the command gets a terminal (raw mode when stdin is
one).

OCI containers (runtimeClassName runc) can run commands; a Wasm module is
one program and cannot, and exec says so. The stream goes over a WebSocket
to the API server, which relays it to the pod's node (Kubernetes' channel
protocol, v5.channel.k8s.io).`,
		Example: `  skiff exec web -- ls /
  skiff exec -it web -c shell -- sh`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if d := cmd.ArgsLenAtDash(); d != 1 {
				return errors.New("usage: skiff exec [-i] [-t] POD [-c CONTAINER] -- COMMAND [ARGS...] (name one pod, then -- and the command)")
			}
			cfg, err := g.clientConfig()
			if err != nil {
				return err
			}
			q := url.Values{"command": args[1:], "container": {container}}
			if stdin {
				q.Set("stdin", "true")
			}
			if tty {
				q.Set("tty", "true")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			c, err := dialPod(ctx, cfg, g.namespaceOr(), args[0], "exec", q, stream.ExecProtocols)
			if err != nil {
				return err
			}
			defer c.CloseNow()
			return runExec(ctx, c, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr(), stdin, tty)
		},
	}
	cmd.Flags().StringVarP(&container, "container", "c", "", "container name; may be left out when the pod has one")
	cmd.Flags().StringVarP(&g.namespace, "namespace", "n", "", "namespace (default \"default\")")
	cmd.Flags().BoolVarP(&stdin, "stdin", "i", false, "pass skiff's stdin to the command")
	cmd.Flags().BoolVarP(&tty, "tty", "t", false, "give the command a terminal")
	return cmd
}

// namespaceOr is the namespace flag, or "default".
func (g *globals) namespaceOr() string {
	if g.namespace == "" {
		return "default"
	}
	return g.namespace
}

// dialPod opens the API server's stream route verb of a pod.
func dialPod(ctx context.Context, cfg clientConfig, ns, pod, verb string, q url.Values, protocols []string) (*websocket.Conn, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	if tc != nil {
		tc.NextProtos = []string{"http/1.1"} // a WebSocket upgrades an HTTP/1.1 request
		tr.TLSClientConfig = tc
	}
	tr.ForceAttemptHTTP2 = false
	h := http.Header{}
	if cfg.Token != "" {
		h.Set("Authorization", "Bearer "+cfg.Token)
	}
	u := cfg.baseURL() + stream.PodPath(url.PathEscape(ns), url.PathEscape(pod), verb) + "?" + q.Encode()
	c, err := stream.Dial(ctx, &http.Client{Transport: tr}, u, h, protocols)
	if err != nil {
		var re *stream.RefusedError
		if errors.As(err, &re) {
			return nil, errors.New(re.Message)
		}
		return nil, fmt.Errorf("%s pod %s: %w", verb, pod, err)
	}
	return c, nil
}

// execStatus is the status the server sends on channel 3.
type execStatus struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Reason  string `json:"reason"`
	Details struct {
		Causes []struct {
			Reason  string `json:"reason"`
			Message string `json:"message"`
		} `json:"causes"`
	} `json:"details"`
}

// runExec speaks the client side of the channel protocol until the
// command's status arrives: nil for success, an exitError for a non-zero
// exit code.
func runExec(ctx context.Context, c *websocket.Conn, in io.Reader, out, errOut io.Writer, stdin, tty bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	send := func(msg []byte) error {
		wctx, wcancel := context.WithTimeout(ctx, stream.WriteTimeout)
		defer wcancel()
		return c.Write(wctx, websocket.MessageBinary, msg)
	}
	if tty {
		if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			if old, err := term.MakeRaw(int(f.Fd())); err == nil {
				defer term.Restore(int(f.Fd()), old)
			}
			go sendSizes(ctx, f, send)
		}
	}
	if stdin {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := in.Read(buf)
				if n > 0 && send(append([]byte{0}, buf[:n]...)) != nil {
					return
				}
				if err != nil {
					if c.Subprotocol() == stream.ProtocolV5 {
						_ = send([]byte{255, 0}) // stdin is closed
					}
					return
				}
			}
		}()
	}
	var status []byte
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			if status != nil {
				return statusError(status)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ce websocket.CloseError
			if errors.As(err, &ce) && ce.Reason != "" {
				return errors.New(ce.Reason)
			}
			return fmt.Errorf("the stream ended before the command's status arrived: %w", err)
		}
		if len(msg) == 0 {
			continue
		}
		switch msg[0] {
		case 1:
			out.Write(msg[1:])
		case 2:
			errOut.Write(msg[1:])
		case 3:
			status = append(status, msg[1:]...)
		}
	}
}

// statusError is the error of a channel 3 status.
func statusError(b []byte) error {
	var st execStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("exec: %s", b)
	}
	if st.Status == "Success" {
		return nil
	}
	if st.Reason == "NonZeroExitCode" {
		for _, c := range st.Details.Causes {
			if c.Reason == "ExitCode" {
				if n, err := strconv.Atoi(c.Message); err == nil {
					return exitError{code: n}
				}
			}
		}
	}
	return errors.New(st.Message)
}

// sendSizes sends the terminal's size now and at every SIGWINCH.
func sendSizes(ctx context.Context, f *os.File, send func([]byte) error) {
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)
	for {
		if w, h, err := term.GetSize(int(f.Fd())); err == nil {
			b, _ := json.Marshal(map[string]int{"Width": w, "Height": h})
			if send(append([]byte{4}, b...)) != nil {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-winch:
		}
	}
}
