// Package serve runs skiff's Connect services over HTTP: one server that
// speaks HTTP/1.1 and HTTP/2 (over TLS when the listener is a TLS one,
// cleartext with prior knowledge otherwise, for gRPC clients), with the
// timeouts and header limit every skiff listener has, so that a slow or
// stalled client costs a connection for a bounded time and nothing more.
// What a request may cost beyond that (body size, requests in flight) is
// the handler's business (see the apiserver).
package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"time"
)

// Limits bounds how long one connection may take over each part of its work.
type Limits struct {
	// ReadHeader bounds reading a request's headers.
	ReadHeader time.Duration
	// Read bounds reading a whole request, body included: a client that
	// trickles its body is cut off when it passes.
	Read time.Duration
	// Write bounds a unary call from the end of its headers to the end of
	// its response. The API server lifts it for streams (see apiserver's
	// limitInFlight): a watch lives for hours.
	Write time.Duration
	// Idle bounds how long a kept-alive connection waits for its next
	// request.
	Idle time.Duration
	// MaxHeaderBytes bounds the size of a request's headers.
	MaxHeaderBytes int
}

// DefaultLimits are the limits of every skiff listener.
var DefaultLimits = Limits{
	ReadHeader:     10 * time.Second,
	Read:           30 * time.Second,
	Write:          60 * time.Second,
	Idle:           120 * time.Second,
	MaxHeaderBytes: 1 << 20,
}

// shutdownGrace bounds how long Run waits for calls in progress to end
// when its context ends; then it closes what is left.
const shutdownGrace = 2 * time.Second

// Run serves h on ln with the limits until ctx ends, then shuts the server
// down. It returns nil after a shutdown, or the error that stopped it
// serving.
func Run(ctx context.Context, ln net.Listener, h http.Handler, l Limits) error {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true) // on a TLS listener (ALPN h2)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           h,
		Protocols:         p,
		ReadHeaderTimeout: l.ReadHeader,
		ReadTimeout:       l.Read,
		WriteTimeout:      l.Write,
		IdleTimeout:       l.Idle,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		// A TLS handshake a stranger fails (no certificate, another CA)
		// is its own business: written to stderr, a flood of them would
		// bury the server's log. The client sees why it was refused.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	}
	return nil
}
