// Package stream holds what the CLI, the API server and the agent share
// of skiff's WebSocket streams for exec and port-forward: the paths, the
// subprotocols, the upgrade of a request with the server's deadlines
// lifted, and the relay of messages between two WebSockets.
//
// Exec speaks Kubernetes' channel protocol (v5.channel.k8s.io or
// v4.channel.k8s.io) end to end, from the client through the API server
// and the agent to the CRI streaming server, which the relays pass on
// message by message. Port-forward opens one WebSocket per TCP connection
// whose binary messages are the connection's bytes; the agent speaks the
// CRI's port-forward framing below it. It knows nothing of pods or nodes.
package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// Subprotocols of exec: Kubernetes' channel protocol.
const (
	ProtocolV5 = "v5.channel.k8s.io"
	ProtocolV4 = "v4.channel.k8s.io"
)

// ExecProtocols are the subprotocols of exec, preferred first.
var ExecProtocols = []string{ProtocolV5, ProtocolV4}

// Paths of the agent's stream routes, served next to its AgentService.
const (
	// AgentExecPath takes namespace, pod, uid, container, command
	// (repeated), tty and stdin.
	AgentExecPath = "/skiff.agent.v1/exec"
	// AgentPortForwardPath takes namespace, pod, uid and port.
	AgentPortForwardPath = "/skiff.agent.v1/portforward"
)

// PodPath is the API server's route of a pod's stream verb ("exec" or
// "portforward").
func PodPath(namespace, name, verb string) string {
	return "/skiff.v1/pods/" + namespace + "/" + name + "/" + verb
}

// Bounds of a relayed stream.
const (
	// IdleTimeout ends a stream in which nothing moved for that long.
	IdleTimeout = time.Hour
	// WriteTimeout bounds the write of one message.
	WriteTimeout = 30 * time.Second
	// MaxMessage bounds a message either side sends.
	MaxMessage = 1 << 20
	// DialTimeout bounds the opening of the next leg.
	DialTimeout = 15 * time.Second
)

// Upgrade lifts the server's read and write deadlines, which a hijacked
// connection would keep, and accepts the WebSocket with one of protocols
// (none: no subprotocol). It answers the request itself on failure.
func Upgrade(w http.ResponseWriter, r *http.Request, protocols []string) (*websocket.Conn, error) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: protocols})
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(MaxMessage)
	return c, nil
}

// Offered returns the subprotocols of protocols that request r offers,
// in r's order.
func Offered(r *http.Request, protocols []string) []string {
	var out []string
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			p = strings.TrimSpace(p)
			for _, q := range protocols {
				if p == q {
					out = append(out, p)
				}
			}
		}
	}
	return out
}

// Dial opens the WebSocket at url with hc offering protocols. A refusal
// before the upgrade comes back as a *RefusedError with the status and
// the message of the response.
func Dial(ctx context.Context, hc *http.Client, url string, header http.Header, protocols []string) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, DialTimeout)
	defer cancel()
	c, res, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: hc, HTTPHeader: header, Subprotocols: protocols})
	if err != nil {
		if res != nil && res.StatusCode != http.StatusSwitchingProtocols {
			msg := ""
			if res.Body != nil {
				b, _ := io.ReadAll(io.LimitReader(res.Body, 4<<10))
				msg = strings.TrimSpace(string(b))
			}
			if msg == "" {
				msg = http.StatusText(res.StatusCode)
			}
			return nil, &RefusedError{Status: res.StatusCode, Message: msg}
		}
		return nil, err
	}
	c.SetReadLimit(MaxMessage)
	return c, nil
}

// RefusedError is a stream refused before its upgrade.
type RefusedError struct {
	Status  int
	Message string
}

func (e *RefusedError) Error() string { return e.Message }

// Refuse answers a request that cannot be upgraded: err's status if it is
// a *RefusedError (the next leg's refusal, passed on), else status.
func Refuse(w http.ResponseWriter, status int, err error) {
	var re *RefusedError
	if errors.As(err, &re) {
		status = re.Status
	}
	http.Error(w, err.Error(), status)
}

// Relay passes every message of a to b and of b to a until either ends,
// the stream is idle for IdleTimeout, or ctx ends; it then closes both,
// passing on the close status and reason of the side that closed.
func Relay(ctx context.Context, a, b *websocket.Conn) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idle := time.AfterFunc(IdleTimeout, cancel)
	defer idle.Stop()
	done := make(chan struct{}, 2)
	pipe := func(from, to *websocket.Conn) {
		defer func() { done <- struct{}{} }()
		for {
			typ, msg, err := from.Read(ctx)
			if err != nil {
				code, reason := websocket.CloseStatus(err), ""
				var ce websocket.CloseError
				if errors.As(err, &ce) {
					reason = ce.Reason
				}
				if code == -1 {
					code, reason = websocket.StatusGoingAway, "the other side went away"
				}
				closeBounded(to, code, reason)
				cancel()
				return
			}
			idle.Reset(IdleTimeout)
			wctx, wcancel := context.WithTimeout(ctx, WriteTimeout)
			err = to.Write(wctx, typ, msg)
			wcancel()
			if err != nil {
				closeBounded(from, websocket.StatusGoingAway, "the other side went away")
				cancel()
				return
			}
		}
	}
	go pipe(a, b)
	go pipe(b, a)
	<-done
	<-done
	a.CloseNow()
	b.CloseNow()
}

// closeBounded closes c with code and reason without waiting long for
// the peer's answer.
func closeBounded(c *websocket.Conn, code websocket.StatusCode, reason string) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Close(code, Reason(reason))
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		c.CloseNow()
	}
}

// Reason fits s in a close frame's reason (123 bytes).
func Reason(s string) string {
	if len(s) <= 123 {
		return s
	}
	return s[:120] + "..."
}

// Errorf is a close reason.
func Errorf(format string, args ...any) string { return Reason(fmt.Sprintf(format, args...)) }
