package controllers

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
)

// EventRecorder reports what a controller did to an object, as events
// (events.Recorder). Record must not block.
type EventRecorder interface {
	Record(obj kinds.Object, typ, reason, format string, args ...any)
}

// record reports an event through r, when there is one.
func record(r EventRecorder, obj kinds.Object, typ, reason, format string, args ...any) {
	if r != nil {
		r.Record(obj, typ, reason, format, args...)
	}
}

// workQueue is the keys a controller's owner goroutine has to look at:
// now (dirty), or from a time on (due). It belongs to that goroutine.
type workQueue struct {
	dirty map[string]bool
	due   map[string]time.Time
}

func newWorkQueue() *workQueue {
	return &workQueue{dirty: map[string]bool{}, due: map[string]time.Time{}}
}

// add queues key now.
func (q *workQueue) add(key string) { q.dirty[key] = true }

// after queues key from d on, unless it is due sooner.
func (q *workQueue) after(key string, d time.Duration, now time.Time) {
	at := now.Add(d)
	if cur, ok := q.due[key]; !ok || at.Before(cur) {
		q.due[key] = at
	}
}

// take returns and forgets the dirty keys, with the due ones whose time
// has come.
func (q *workQueue) take(now time.Time) []string {
	for k, at := range q.due {
		if !at.After(now) {
			delete(q.due, k)
			q.dirty[k] = true
		}
	}
	out := make([]string, 0, len(q.dirty))
	for k := range q.dirty {
		out = append(out, k)
	}
	clear(q.dirty)
	return out
}

// next is how long until the soonest due key, and whether there is one.
func (q *workQueue) next(now time.Time) (time.Duration, bool) {
	var soonest time.Time
	for _, at := range q.due {
		if soonest.IsZero() || at.Before(soonest) {
			soonest = at
		}
	}
	if soonest.IsZero() {
		return 0, false
	}
	return max(soonest.Sub(now), 0), true
}

// retryAfter is how soon a key whose sync failed is looked at again.
const retryAfter = time.Second

// runLoop is a controller's owner goroutine: it folds changes in with
// apply, and once ready (every cache listed) syncs each queued key; a
// failed sync is logged with failed and tried again after retryAfter, and
// a sync may ask to be run again after a while. Every resync all keys are
// queued. It returns when ctx ends.
func runLoop(ctx context.Context, changes <-chan change, resync time.Duration, q *workQueue,
	apply func(change), ready func() bool, all func() []string,
	sync func(key string) (time.Duration, error), failed func(key string, err error),
) {
	tick := time.NewTicker(resync)
	defer tick.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if ready() {
			for _, key := range q.take(time.Now()) {
				wait, err := sync(key)
				if ctx.Err() != nil {
					return
				}
				switch {
				case err != nil:
					failed(key, err)
					q.after(key, retryAfter, time.Now())
				case wait > 0:
					q.after(key, wait, time.Now())
				}
			}
		}
		d, ok := q.next(time.Now())
		if !ok {
			d = time.Hour
		}
		timer.Reset(d)
		select {
		case <-ctx.Done():
			return
		case ch := <-changes:
			apply(ch)
		drain:
			for {
				select {
				case ch := <-changes:
					apply(ch)
				default:
					break drain
				}
			}
		case <-tick.C:
			for _, k := range all() {
				q.add(k)
			}
		case <-timer.C:
		}
	}
}

func followPods(ctx context.Context, log *slog.Logger, c skiffv1connect.PodServiceClient, out chan<- change) {
	follow(ctx, log, kindPods, out, func(ctx context.Context) ([]object, uint64, error) {
		res, err := c.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
		if err != nil {
			return nil, 0, err
		}
		return toObjects(res.Msg.GetItems()), res.Msg.GetResourceVersion(), nil
	}, func(ctx context.Context, rev uint64) (*connect.ServerStreamForClient[skiffv1.PodWatchEvent], error) {
		return c.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{ResourceVersion: rev, AllowBookmarks: true}))
	}, func(e *skiffv1.PodWatchEvent) (skiffv1.EventType, object) { return e.GetType(), e.GetObject() })
}

func followReplicaSets(ctx context.Context, log *slog.Logger, c skiffv1connect.ReplicaSetServiceClient, out chan<- change) {
	follow(ctx, log, kindReplicaSets, out, func(ctx context.Context) ([]object, uint64, error) {
		res, err := c.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
		if err != nil {
			return nil, 0, err
		}
		return toObjects(res.Msg.GetItems()), res.Msg.GetResourceVersion(), nil
	}, func(ctx context.Context, rev uint64) (*connect.ServerStreamForClient[skiffv1.ReplicaSetWatchEvent], error) {
		return c.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{ResourceVersion: rev, AllowBookmarks: true}))
	}, func(e *skiffv1.ReplicaSetWatchEvent) (skiffv1.EventType, object) { return e.GetType(), e.GetObject() })
}

func followDeployments(ctx context.Context, log *slog.Logger, c skiffv1connect.DeploymentServiceClient, out chan<- change) {
	follow(ctx, log, kindDeployments, out, func(ctx context.Context) ([]object, uint64, error) {
		res, err := c.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
		if err != nil {
			return nil, 0, err
		}
		return toObjects(res.Msg.GetItems()), res.Msg.GetResourceVersion(), nil
	}, func(ctx context.Context, rev uint64) (*connect.ServerStreamForClient[skiffv1.DeploymentWatchEvent], error) {
		return c.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{ResourceVersion: rev, AllowBookmarks: true}))
	}, func(e *skiffv1.DeploymentWatchEvent) (skiffv1.EventType, object) { return e.GetType(), e.GetObject() })
}

// connectMessage is an error's message without the Connect code prefix.
func connectMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}
