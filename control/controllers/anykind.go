package controllers

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"connectrpc.com/connect"

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
// it from the list's version, sending each list (replace) and event to out,
// until ctx ends. A watch that breaks is resumed from the newest version
// seen; one that expired is listed again.
func followKind(ctx context.Context, log *slog.Logger, k *kinds.Kind, c kinds.Client, out chan<- kindChange) {
	send := func(ch kindChange) bool {
		select {
		case out <- ch:
			return true
		case <-ctx.Done():
			return false
		}
	}
	var rev uint64 // 0: list first
	for ctx.Err() == nil {
		var err error
		if rev == 0 {
			lctx, cancel := context.WithTimeout(ctx, writeTimeout)
			var items []kinds.Object
			items, rev, err = c.List(lctx, &skiffv1.ListRequest{})
			cancel()
			if err == nil && !send(kindChange{kind: k, replace: true, items: items}) {
				return
			}
		}
		if err == nil {
			var w kinds.Stream
			if w, err = c.Watch(ctx, &skiffv1.WatchRequest{ResourceVersion: rev, AllowBookmarks: true}); err == nil {
				for w.Receive() {
					typ, obj := w.Event()
					if v := obj.GetMetadata().GetResourceVersion(); v > rev {
						rev = v
					}
					if typ == skiffv1.EventType_EVENT_TYPE_BOOKMARK || typ == skiffv1.EventType_EVENT_TYPE_UNSPECIFIED || obj.GetMetadata().GetName() == "" {
						continue
					}
					if !send(kindChange{kind: k, typ: typ, obj: obj}) {
						_ = w.Close()
						return
					}
				}
				err = errors.Join(w.Err(), w.Close())
			}
		}
		if ctx.Err() != nil {
			return
		}
		if connect.CodeOf(err) == connect.CodeOutOfRange {
			rev = 0 // expired: list again
		}
		log.Debug("watch ended; opening it again", "kind", k.Kind, "rv", rev, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
