package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// httpLimits bounds how long one connection may take over each part of its
// work, so that a slow or stalled client costs a connection for a bounded
// time and nothing more.
type httpLimits struct {
	// ReadHeader bounds reading a request's headers.
	ReadHeader time.Duration
	// Read bounds reading a whole request, body included: a client that
	// trickles its body is cut off when it passes.
	Read time.Duration
	// Write bounds a unary call from the end of its headers to the end of
	// its response. The API server lifts it, and Read, for streams (see
	// apiserver's limitInFlight): a watch lives for hours.
	Write time.Duration
	// Idle bounds how long a kept-alive connection waits for its next
	// request.
	Idle time.Duration
	// MaxHeaderBytes bounds the size of a request's headers.
	MaxHeaderBytes int
}

// defaultHTTPLimits are the limits of every skiff listener.
var defaultHTTPLimits = httpLimits{
	ReadHeader:     10 * time.Second,
	Read:           30 * time.Second,
	Write:          60 * time.Second,
	Idle:           120 * time.Second,
	MaxHeaderBytes: 1 << 20,
}

// serveHTTP serves h on ln with HTTP/1.1 and cleartext HTTP/2 (for gRPC
// clients) and defaultHTTPLimits, and returns a function that shuts it
// down.
func serveHTTP(ln net.Listener, h http.Handler, log *slog.Logger) func() {
	return serveHTTPWith(ln, h, log, defaultHTTPLimits)
}

// serveHTTPWith is serveHTTP with the given limits.
func serveHTTPWith(ln net.Listener, h http.Handler, log *slog.Logger, l httpLimits) func() {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           h,
		Protocols:         p,
		ReadHeaderTimeout: l.ReadHeader,
		ReadTimeout:       l.Read,
		WriteTimeout:      l.Write,
		IdleTimeout:       l.Idle,
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
		<-done
	}
}
