package kinds

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// WatchStream is an open watch as FollowWatch reads it: a Stream, or a
// generated client's *connect.ServerStreamForClient.
type WatchStream interface {
	Receive() bool
	Err() error
	Close() error
}

// FollowWatch calls notify on every change a watch reports (never on a
// bookmark), opening the watch again with open when it ends, until ctx
// ends. event reads the type and resource version of the stream's current
// event. It resumes from the newest version its events and bookmarks have
// reached, so a watch that breaks misses nothing; when there is none yet,
// or it has expired, it watches from now and calls notify for what it may
// have missed. Callers list again on notify: FollowWatch keeps no objects,
// so its memory does not grow with the kind's.
func FollowWatch[S WatchStream](ctx context.Context, log *slog.Logger, what string, open func(ctx context.Context, rev uint64) (S, error), event func(S) (skiffv1.EventType, uint64), notify func()) {
	var rev uint64 // 0: from now
	for ctx.Err() == nil {
		st, err := open(ctx, rev)
		if err == nil {
			for st.Receive() {
				typ, rv := event(st)
				rev = max(rev, rv)
				if typ != skiffv1.EventType_EVENT_TYPE_BOOKMARK {
					notify()
				}
			}
			err = errors.Join(st.Err(), st.Close())
		}
		if ctx.Err() != nil {
			return
		}
		if connect.CodeOf(err) == connect.CodeOutOfRange {
			rev = 0 // expired, or ahead of this server
		}
		log.Debug("watch ended; opening it again", "what", what, "rv", rev, "err", err)
		if rev == 0 {
			notify()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// Follow is FollowWatch over c's watches of what req selects.
func Follow(ctx context.Context, c Client, req *skiffv1.WatchRequest, log *slog.Logger, notify func()) {
	open := func(ctx context.Context, rev uint64) (Stream, error) {
		return c.Watch(ctx, &skiffv1.WatchRequest{
			Namespace: req.GetNamespace(), LabelSelector: req.GetLabelSelector(), FieldSelector: req.GetFieldSelector(),
			ResourceVersion: rev, AllowBookmarks: true,
		})
	}
	event := func(st Stream) (skiffv1.EventType, uint64) {
		typ, o := st.Event()
		return typ, o.GetMetadata().GetResourceVersion()
	}
	FollowWatch(ctx, log, "", open, event, notify)
}

// ListWatch keeps a copy of a kind, as a Kubernetes informer does: list
// hands a fresh listing over and returns its version; then ListWatch
// watches from that version, handing each event to apply, which returns
// the event's version and whether to go on. A watch that breaks is opened
// again from the newest version seen, so nothing is missed; one whose
// version expired lists again. It waits pause between attempts, and
// returns when ctx ends or apply says stop.
func ListWatch[S WatchStream](ctx context.Context, log *slog.Logger, what string, pause time.Duration,
	list func(context.Context) (uint64, error),
	open func(ctx context.Context, rev uint64) (S, error),
	apply func(S) (rev uint64, ok bool),
) {
	var rev uint64 // 0: list first
	for ctx.Err() == nil {
		var err error
		if rev == 0 {
			rev, err = list(ctx)
			if err != nil {
				rev = 0
			}
		}
		if err == nil {
			var st S
			if st, err = open(ctx, rev); err == nil {
				for st.Receive() {
					v, ok := apply(st)
					rev = max(rev, v)
					if !ok {
						_ = st.Close()
						return
					}
				}
				err = errors.Join(st.Err(), st.Close())
			}
		}
		if ctx.Err() != nil {
			return
		}
		if connect.CodeOf(err) == connect.CodeOutOfRange {
			rev = 0 // expired, or ahead of this server: list again
		}
		log.Debug("watch ended; opening it again", "what", what, "rv", rev, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}
