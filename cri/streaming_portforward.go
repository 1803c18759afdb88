package cri

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// A port-forward session speaks Kubernetes' v4.channel.k8s.io port-forward
// framing: for the i-th port of the URL's "port" query parameters, channel
// 2i carries the connection's bytes both ways and channel 2i+1 the
// server's error, if any, as text. The first message the server sends on
// each of the two carries the port, 2 bytes little-endian. Each port gets
// one TCP connection to 127.0.0.1:<port> inside the sandbox's network
// namespace; the session ends when every connection has ended.

// Bounds of a port-forward session.
const (
	maxForwardedPorts = 16
	// forwardDialTimeout bounds the connection to the pod's port.
	forwardDialTimeout = 10 * time.Second
)

// forwardPorts parses the "port" query parameters (each may list several,
// comma-separated).
func forwardPorts(r *http.Request) ([]uint16, error) {
	var ports []uint16
	for _, v := range r.URL.Query()["port"] {
		for _, p := range strings.Split(v, ",") {
			n, err := strconv.ParseUint(p, 10, 16)
			if err != nil || n == 0 {
				return nil, fmt.Errorf("query parameter port: %q is not a port number (1-65535)", p)
			}
			ports = append(ports, uint16(n))
		}
	}
	switch {
	case len(ports) == 0:
		return nil, fmt.Errorf("query parameter port: at least one port is required")
	case len(ports) > maxForwardedPorts:
		return nil, fmt.Errorf("query parameter port: %d ports, at most %d", len(ports), maxForwardedPorts)
	}
	return ports, nil
}

// servePortForward relays one TCP connection per port of the URL to the
// sandbox of a port-forward token.
func (s *streamServer) servePortForward(w http.ResponseWriter, r *http.Request) {
	ports, err := forwardPorts(r)
	if err != nil {
		// Before the token is taken: the client may try again.
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p, c, done, ok := s.openSession(w, r, streamPortForward, []string{protocolV4})
	if !ok {
		return
	}
	defer done()
	defer c.CloseNow()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	idle := newIdleTimer(cancel)
	defer idle.stop()
	netnsPath := ""
	sb, err := s.svc.getSandbox(p.sandbox)
	if err != nil {
		c.Close(websocket.StatusInternalError, "the sandbox is gone")
		return
	}
	netnsPath = sb.snapshot().NetNSPath

	conns := make([]net.Conn, len(ports))
	var wg sync.WaitGroup
	for i, port := range ports {
		data, errc := byte(2*i), byte(2*i+1)
		var pb [2]byte
		binary.LittleEndian.PutUint16(pb[:], port)
		if send(ctx, c, data, pb[:]) != nil || send(ctx, c, errc, pb[:]) != nil {
			return
		}
		conn, err := s.dialPort(ctx, netnsPath, port)
		if err != nil {
			if send(ctx, c, errc, []byte(forwardError(port, p.sandbox, err))) != nil {
				return
			}
			continue
		}
		conns[i] = conn
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			buf := make([]byte, maxChunk)
			for {
				n, err := conn.Read(buf)
				if n > 0 {
					if send(ctx, c, data, buf[:n]) != nil {
						return
					}
					idle.touch()
				}
				if err != nil {
					return
				}
			}
		}()
	}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			_, msg, err := c.Read(ctx)
			if err != nil {
				cancel()
				return
			}
			idle.touch()
			if len(msg) == 0 || msg[0]%2 != 0 || int(msg[0]/2) >= len(conns) || conns[msg[0]/2] == nil {
				continue
			}
			conn := conns[msg[0]/2]
			_ = conn.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
			if _, err := conn.Write(msg[1:]); err != nil {
				conn.Close() // its reader ends, and with the last the session
			}
		}
	}()
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			for _, conn := range conns {
				if conn != nil {
					conn.Close()
				}
			}
		case <-stopped:
		}
	}()
	wg.Wait()
	close(stopped)
	if ctx.Err() == nil {
		c.Close(websocket.StatusNormalClosure, "")
	}
	cancel()
	c.CloseNow()
	<-readDone
}

// dialPort connects to 127.0.0.1:port inside the network namespace at
// netnsPath, within forwardDialTimeout.
func (s *streamServer) dialPort(ctx context.Context, netnsPath string, port uint16) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, forwardDialTimeout)
	defer cancel()
	return s.dial(ctx, netnsPath, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
}

// forwardError is what a client is told when port of sandbox cannot be
// reached.
func forwardError(port uint16, sandbox string, err error) string {
	return fmt.Sprintf("forward port %d to sandbox %s: %v", port, sandbox, err)
}
