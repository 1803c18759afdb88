package scheduler

import (
	"context"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	"skiff.dev/skiff/control/api/kinds"
)

// rewatchPause is how long follow waits before it opens a broken watch
// again.
const rewatchPause = 250 * time.Millisecond

// follow keeps the cache's copy of one kind, as a Kubernetes informer: it
// lists (replace), then watches from the listing's version, handing every
// event to apply, which returns the event's version. A watch that breaks
// is opened again from the newest version seen, so nothing is missed; one
// whose version expired lists again. It returns when ctx ends.
func follow[T, E any](ctx context.Context, log *slog.Logger, what string,
	list func(context.Context) ([]T, uint64, error),
	watch func(context.Context, uint64) (*connect.ServerStreamForClient[E], error),
	replace func([]T), apply func(*E) uint64,
) {
	kinds.ListWatch(ctx, log, what, rewatchPause, func(ctx context.Context) (uint64, error) {
		items, rev, err := list(ctx)
		if err == nil {
			replace(items)
		}
		return rev, err
	}, watch, func(st *connect.ServerStreamForClient[E]) (uint64, bool) {
		return apply(st.Msg()), true
	})
}
