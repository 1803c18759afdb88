package controllers

import (
	"context"
	"log/slog"
	"time"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

// ClientFunc returns a type-erased client of a kind's service, for the
// controllers that work on every kind (garbage collector, namespace
// controller).
type ClientFunc func(k *kinds.Kind) kinds.Client

// kindChange is one watch event of any kind, or (replace) a fresh list.
type kindChange struct {
	kind    *kinds.Kind
	replace bool
	items   []kinds.Object
	typ     skiffv1.EventType
	obj     kinds.Object
}

// followKind is follow over a type-erased client: it lists k and watches
// it from the list's version (kinds.ListWatch), sending each list (replace)
// and event to out, until ctx ends.
func followKind(ctx context.Context, log *slog.Logger, k *kinds.Kind, c kinds.Client, out chan<- kindChange) {
	send := func(ch kindChange) bool {
		select {
		case out <- ch:
			return true
		case <-ctx.Done():
			return false
		}
	}
	kinds.ListWatch(ctx, log, k.Kind, time.Second, func(ctx context.Context) (uint64, error) {
		lctx, cancel := context.WithTimeout(ctx, writeTimeout)
		defer cancel()
		items, rev, err := c.List(lctx, &skiffv1.ListRequest{})
		if err == nil && !send(kindChange{kind: k, replace: true, items: items}) {
			err = ctx.Err()
		}
		return rev, err
	}, func(ctx context.Context, rev uint64) (kinds.Stream, error) {
		return c.Watch(ctx, &skiffv1.WatchRequest{ResourceVersion: rev, AllowBookmarks: true})
	}, func(w kinds.Stream) (uint64, bool) {
		typ, obj := w.Event()
		return obj.GetMetadata().GetResourceVersion(), skipEvent(typ, obj) || send(kindChange{kind: k, typ: typ, obj: obj})
	})
}
