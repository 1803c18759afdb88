package apiserver

import (
	"context"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/reflect/protoreflect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
	"skiff.dev/skiff/control/store"
)

// Watch streams the kind's changes after the request's version until ctx
// ends. An object that stops matching the selectors is sent as DELETED, as
// a Kubernetes selector watch does, so the watcher forgets it.
//
// With allow_bookmarks, about every bookmarkInterval it also sends a
// BOOKMARK: an empty object of the kind whose metadata.resourceVersion is
// the revision of a store progress event (store.WithProgress). The store
// sends that event only after every event at or below its revision, and
// each of those has been filtered, and sent when it matched, before the
// bookmark goes out: so everything up to a bookmark's version has been
// sent, nothing after it, and a watch resumed from it misses nothing. A
// bookmark that would not advance past the last version sent is left out.
func (b *backend) Watch(ctx context.Context, k *kinds.Kind, req *skiffv1.WatchRequest, send func(skiffv1.EventType, kinds.Object) error) error {
	f, err := parseFilter(k, req.GetLabelSelector(), req.GetFieldSelector())
	if err != nil {
		return err
	}
	keep := f.keep(k)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var opts []store.WatchOption
	if req.GetAllowBookmarks() {
		every := b.bookmarkInterval
		if every <= 0 {
			every = defaultBookmarkInterval
		}
		opts = append(opts, store.WithProgress(every))
	}
	events, err := b.store.Watch(ctx, prefix(k, req.GetNamespace()), req.GetResourceVersion(), opts...)
	if err != nil {
		return toConnect(fmt.Errorf("watch %s: %w", k.Plural, err))
	}
	if err := send(skiffv1.EventType_EVENT_TYPE_UNSPECIFIED, nil); err != nil {
		return err
	}
	sent := req.GetResourceVersion() // the newest version the client has been told of
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				if err := b.store.Err(); err != nil {
					return connect.NewError(connect.CodeUnavailable, fmt.Errorf("watch %s: this server's store stopped: %w; watch another server", k.Plural, err))
				}
				return connect.NewError(connect.CodeUnavailable, fmt.Errorf("watch %s: the watch fell behind and was closed; list and watch again", k.Plural))
			}
			if ev.Type == store.EventProgress {
				if ev.Revision <= sent {
					continue
				}
				sent = ev.Revision
				if err := send(skiffv1.EventType_EVENT_TYPE_BOOKMARK, bookmark(k, ev.Revision)); err != nil {
					return err
				}
				continue
			}
			typ, obj, ok, err := translate(k, ev, keep, b.decoded.decode)
			if err != nil {
				return toConnect(err)
			}
			if !ok {
				continue
			}
			sent = ev.Revision
			if err := send(typ, obj); err != nil {
				return err
			}
		}
	}
}

// bookmark is the object of a BOOKMARK event, as Kubernetes sends it: an
// empty object of the kind with only metadata.resourceVersion.
func bookmark(k *kinds.Kind, rev uint64) kinds.Object {
	obj := k.New()
	obj.ProtoReflect().Set(obj.ProtoReflect().Descriptor().Fields().ByName("metadata"), protoreflect.ValueOfMessage((&skiffv1.ObjectMeta{ResourceVersion: rev}).ProtoReflect()))
	return obj
}

// translate turns a store event into what a watch with the filter keep
// sends, if anything. decode reads a stored value (decodedCache.decode: the
// object may be shared with other watches and is not changed); an event's
// revision is its KV's ModRevision, so the object has it as its
// resourceVersion.
func translate(k *kinds.Kind, ev store.Event, keep func(kinds.Object) bool, decode func(*kinds.Kind, store.KV) (kinds.Object, error)) (skiffv1.EventType, kinds.Object, bool, error) {
	obj, err := decode(k, ev.KV)
	if err != nil {
		return 0, nil, false, err
	}
	matches := func(o kinds.Object) bool { return keep == nil || keep(o) }
	if ev.Type == store.EventDelete {
		return skiffv1.EventType_EVENT_TYPE_DELETED, obj, matches(obj), nil
	}
	// Without a filter the previous version matched by definition: no
	// need to decode it (every watcher would, for every event).
	hadPrev := keep == nil && ev.PrevKV != nil
	if keep != nil && ev.PrevKV != nil {
		prev, err := decode(k, *ev.PrevKV)
		if err != nil {
			return 0, nil, false, err
		}
		hadPrev = matches(prev)
	}
	now := matches(obj)
	switch {
	case now && hadPrev:
		return skiffv1.EventType_EVENT_TYPE_MODIFIED, obj, true, nil
	case now:
		return skiffv1.EventType_EVENT_TYPE_ADDED, obj, true, nil
	case hadPrev:
		return skiffv1.EventType_EVENT_TYPE_DELETED, obj, true, nil
	}
	return 0, nil, false, nil
}
