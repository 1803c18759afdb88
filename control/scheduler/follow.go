package scheduler

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"connectrpc.com/connect"
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
	var rev uint64 // 0: list first
	for ctx.Err() == nil {
		var err error
		if rev == 0 {
			var items []T
			if items, rev, err = list(ctx); err == nil {
				replace(items)
			}
		}
		if err == nil {
			var st *connect.ServerStreamForClient[E]
			if st, err = watch(ctx, rev); err == nil {
				for st.Receive() {
					rev = max(rev, apply(st.Msg()))
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
		case <-time.After(rewatchPause):
		}
	}
}
