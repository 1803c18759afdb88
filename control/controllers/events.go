// Package controllers holds skiff's reconcile loops. They run on the Raft
// leader only and see the cluster through the API clients alone, never the
// store; each is written so that a second copy running briefly during a
// leader change is harmless.
package controllers

import (
	"context"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

// DefaultEventTTL is how long an event is kept after it last happened, as
// the Kubernetes API server's --event-ttl.
const DefaultEventTTL = time.Hour

// EventTTL deletes events that have not happened again for TTL.
type EventTTL struct {
	Events skiffv1connect.EventServiceClient
	// TTL is DefaultEventTTL when zero.
	TTL time.Duration
	// Every is how often it looks; a minute when zero.
	Every  time.Duration
	Logger *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Run deletes expired events until ctx ends.
func (c *EventTTL) Run(ctx context.Context) {
	every := c.Every
	if every == 0 {
		every = time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if n, err := c.Sweep(ctx); err != nil && ctx.Err() == nil {
			c.log().Warn("expire events", "err", err)
		} else if n > 0 {
			c.log().Debug("expired events", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep deletes every event whose last occurrence is older than the TTL
// and returns how many it deleted.
func (c *EventTTL) Sweep(ctx context.Context) (int, error) {
	ttl := c.TTL
	if ttl == 0 {
		ttl = DefaultEventTTL
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	res, err := c.Events.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
	if err != nil {
		return 0, err
	}
	cutoff := now().Add(-ttl)
	n := 0
	for _, e := range res.Msg.GetItems() {
		last := e.GetLastTimestamp()
		if last == nil {
			last = e.GetMetadata().GetCreationTimestamp()
		}
		if last.AsTime().After(cutoff) {
			continue
		}
		m := e.GetMetadata()
		// At its version: an event that happened again meanwhile stays.
		_, err := c.Events.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Namespace: m.GetNamespace(), Name: m.GetName(), ResourceVersion: m.GetResourceVersion()}))
		switch {
		case err == nil:
			n++
		case connect.CodeOf(err) == connect.CodeNotFound, connect.CodeOf(err) == connect.CodeAborted:
		default:
			return n, err
		}
	}
	return n, nil
}

func (c *EventTTL) log() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}
