package kinds

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// Follow calls notify on every change a watch of c reports (never on a
// bookmark), opening the watch again when it ends, until ctx ends. It
// resumes from the newest version its events and bookmarks have reached,
// so a watch that breaks misses nothing; when there is none yet, or it has
// expired, it watches from now and calls notify for what it may have
// missed. Callers list again on notify: Follow keeps no objects, so its
// memory does not grow with the kind's.
func Follow(ctx context.Context, c Client, req *skiffv1.WatchRequest, log *slog.Logger, notify func()) {
	var rev uint64 // 0: from now
	for ctx.Err() == nil {
		r := &skiffv1.WatchRequest{
			Namespace: req.GetNamespace(), LabelSelector: req.GetLabelSelector(), FieldSelector: req.GetFieldSelector(),
			ResourceVersion: rev, AllowBookmarks: true,
		}
		st, err := c.Watch(ctx, r)
		if err == nil {
			for st.Receive() {
				typ, o := st.Event()
				rev = max(rev, o.GetMetadata().GetResourceVersion())
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
		log.Debug("watch ended; opening it again", "rv", rev, "err", err)
		if rev == 0 {
			notify()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
