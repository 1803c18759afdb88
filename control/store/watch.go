package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Watch tuning; Config's unexported fields override them in tests.
const (
	defaultHistoryLimit = 10000 // events kept in state.db for resuming watches
	defaultWatchBuffer  = 4096  // live events queued per watcher before it is dropped; > 3 × MaxTxnOps
	historyPage         = 256   // events scanned per read transaction during replay
)

// Watch streams the events under prefix with Revision > rev, in revision
// order: first those recorded in the history (which survives restarts), then
// live ones as they are applied, with no gap and no duplicate between the
// two. rev 0 means "from now". Use the revision returned by List to watch
// from a listing. The events of one Txn share its revision and come in the
// order of its ops, together: the channel never ends between two events of
// one revision, so resuming after the last revision received misses nothing.
//
// If events after rev have been trimmed from the history (it keeps the last
// 10000), Watch fails with ErrExpired: List again and watch from there.
//
// The channel is closed when ctx ends, the Store closes or fails, and also when the
// watcher cannot keep up: each watcher has a bounded queue (4096 events) so a
// slow consumer never blocks writes; on overflow the queued events are still
// delivered, then the channel is closed (a revision whose events do not all
// fit is left out whole). A snapshot restore (a follower that
// fell far behind) also closes every watch. A consumer that sees the channel
// closed while its ctx is still live must List and Watch again, like a
// Kubernetes informer. Events share their Value slices between watchers:
// treat them as read-only. WithProgress adds progress events.
func (s *Store) Watch(ctx context.Context, prefix string, rev uint64, opts ...WatchOption) (<-chan Event, error) {
	var o watchOptions
	for _, opt := range opts {
		opt(&o)
	}
	if err := s.refuse(); err != nil {
		return nil, fmt.Errorf("watch %s: %w", prefix, err)
	}
	w, upto, err := s.hub.subscribe(prefix, s.watchBuffer)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", prefix, err)
	}
	from := rev
	if rev == 0 {
		from = upto
	} else {
		comp, err := s.fsm.compacted()
		if err != nil {
			w.release()
			return nil, dbErr("watch", prefix, err)
		}
		if rev < comp {
			w.release()
			return nil, fmt.Errorf("watch %s: %w: resourceVersion %d is too old (oldest is %d), list again", prefix, ErrExpired, rev, comp)
		}
		// The hub may not have published what the state machine has
		// applied (and a List has read) yet: the future starts after both.
		if now := max(upto, s.Revision()); rev > now {
			if now, err = s.catchUp(ctx, rev); err != nil {
				w.release()
				return nil, fmt.Errorf("watch %s: %w", prefix, err)
			}
			if now < rev {
				w.release()
				return nil, fmt.Errorf("watch %s: %w: resourceVersion %d is newer than this store's %d; list again", prefix, ErrFutureRevision, rev, now)
			}
		}
	}
	out := make(chan Event)
	go s.serveWatch(ctx, w, from, upto, out, o.progress)
	return out, nil
}

// catchUpWait bounds how long a Watch from a revision this server has not
// applied yet waits for it. A client that moves from one server to another
// may carry a revision the new one is a few milliseconds behind on.
const catchUpWait = 2 * time.Second

// catchUp waits for the state machine to reach rev, when it may: the
// revision is committed and only not applied here yet, or this server is a
// follower that may lag the leader. On the leader, a revision beyond the
// commit index is in the future and it returns at once. It returns the
// revision reached.
func (s *Store) catchUp(ctx context.Context, rev uint64) (uint64, error) {
	if s.IsLeader() && rev > s.raft.CommitIndex() {
		return s.Revision(), nil
	}
	t := time.NewTimer(catchUpWait)
	defer t.Stop()
	for {
		next := s.hub.next()
		if now := s.Revision(); now >= rev {
			return now, nil
		}
		select {
		case <-next:
		case <-t.C:
			return s.Revision(), nil
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-s.done:
			return 0, ErrClosed
		}
	}
}

// WatchOption tunes one Watch.
type WatchOption func(*watchOptions)

type watchOptions struct {
	progress time.Duration
}

// WithProgress asks for an EventProgress about every d (never when d <= 0),
// as etcd's progress notifications: a consumer that passes on only some
// events can still tell a client how far the watch has gone, so that the
// client resumes from a recent revision rather than an expired one.
//
// A progress event never claims a revision whose events it has not sent:
// every event under the prefix with a revision at or below its Revision
// came on the channel before it, and none above, so Watch(prefix,
// ev.Revision) after it misses nothing and repeats nothing. Its Revision is
// the store's newest published revision when the watch is caught up
// (nothing queued for it), and otherwise one below the revision of the next
// event, sent just before that event. Progress revisions never decrease and
// are never below the revision the watch started after.
func WithProgress(d time.Duration) WatchOption {
	return func(o *watchOptions) { o.progress = d }
}

// serveWatch owns out: it replays the history in (from, upto] in short read
// transactions, then forwards live events, dropping those at or below the
// revision replay ended at (the hub queued them too, or they precede from).
// Every progress interval (none when 0) a progress event falls due; it goes
// out as soon as the watch is caught up or before the next event, whichever
// comes first (see WithProgress).
func (s *Store) serveWatch(ctx context.Context, w *watcher, from, upto uint64, out chan<- Event, progress time.Duration) {
	defer close(out)
	defer w.release()
	var tick <-chan time.Time
	if progress > 0 {
		t := time.NewTicker(progress)
		defer t.Stop()
		tick = t.C
	}
	due := false // a progress event is owed
	put := func(ev Event) bool {
		for {
			select {
			case out <- ev:
				return true
			case <-tick:
				due = true
			case <-ctx.Done():
				return false
			case <-s.done:
				return false
			}
		}
	}
	// send sends ev, after the progress event owed if any: every event
	// below ev's revision has been sent, since they come in revision order.
	send := func(ev Event) bool {
		if due {
			due = false
			if !put(Event{Type: EventProgress, Revision: ev.Revision - 1}) {
				return false
			}
		}
		return put(ev)
	}

	last := from
	for last < upto {
		evs, next, err := s.fsm.history(w.prefix, last, upto, historyPage)
		if err != nil {
			s.log.Debug("store: watch stopped during replay", "prefix", w.prefix, "rv", last, "err", err)
			return
		}
		for _, ev := range evs {
			if !send(ev) {
				return
			}
		}
		last = next
	}
	for {
		if due {
			// Caught up: everything the hub published under the prefix
			// has been sent (and what precedes from needs no sending).
			if rev, ok := s.hub.caughtUp(w); ok {
				due = false
				if !put(Event{Type: EventProgress, Revision: max(rev, last)}) {
					return
				}
			}
		}
		select {
		case ev, ok := <-w.ch:
			if !ok {
				return
			}
			if ev.Revision <= last {
				continue
			}
			if !send(ev) {
				return
			}
		case <-tick:
			due = true
		case <-ctx.Done():
			return
		case <-s.done:
			return
		}
	}
}

// hub fans applied events out to watchers. It is a mutex-guarded fan-out, not
// an owner goroutine: publish runs on raft's FSM goroutine right after a
// batch commits, never blocks (a full watcher is dropped), and holds mu only
// for the sends.
type hub struct {
	log *slog.Logger

	mu       sync.Mutex
	rev      uint64 // every event at or below rev has been published
	watchers map[*watcher]struct{}
	closed   bool
	wg       sync.WaitGroup // one per subscribed watcher until release
	advanced chan struct{}  // closed and replaced each time the state machine applies
}

// applied wakes those waiting for the state machine to advance.
func (h *hub) applied() {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.advanced)
	h.advanced = make(chan struct{})
}

// next returns a channel closed when the state machine next applies.
func (h *hub) next() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.advanced
}

type watcher struct {
	h       *hub
	prefix  string
	ch      chan Event // closed by the hub when the watcher is dropped
	release func()
}

func newHub(rev uint64, log *slog.Logger) *hub {
	return &hub{rev: rev, log: log, watchers: make(map[*watcher]struct{}), advanced: make(chan struct{})}
}

// subscribe registers a watcher and returns the revision it starts after:
// events above it will be published to the watcher, events at or below it
// are already in state.db.
func (h *hub) subscribe(prefix string, buf int) (*watcher, uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, 0, ErrClosed
	}
	w := &watcher{h: h, prefix: prefix, ch: make(chan Event, buf)}
	w.release = sync.OnceFunc(func() {
		h.mu.Lock()
		h.drop(w)
		h.mu.Unlock()
		h.wg.Done()
	})
	h.watchers[w] = struct{}{}
	h.wg.Add(1)
	return w, h.rev, nil
}

// drop removes w and closes its channel; mu must be held.
func (h *hub) drop(w *watcher) {
	if _, ok := h.watchers[w]; ok {
		delete(h.watchers, w)
		close(w.ch)
	}
}

// publish queues evs, in revision order, to every matching watcher. A
// revision's events are queued to a watcher all together or, if they do not
// all fit, not at all: the watcher is dropped at the revision boundary.
func (h *hub) publish(evs []Event) {
	if len(evs) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for len(evs) > 0 {
		n := 1
		for n < len(evs) && evs[n].Revision == evs[0].Revision {
			n++
		}
		h.publishRevision(evs[:n])
		evs = evs[n:]
	}
}

// publishRevision queues the events of one revision; mu must be held.
func (h *hub) publishRevision(evs []Event) {
	h.rev = evs[0].Revision
	for w := range h.watchers {
		n := 0
		for _, ev := range evs {
			if strings.HasPrefix(ev.KV.Key, w.prefix) {
				n++
			}
		}
		if n == 0 {
			continue
		}
		// Only publish sends, under mu, so the room seen here stays.
		if cap(w.ch)-len(w.ch) < n {
			h.log.Warn("store: watcher too slow, closing it", "prefix", w.prefix, "rv", h.rev)
			h.drop(w)
			continue
		}
		for _, ev := range evs {
			if strings.HasPrefix(ev.KV.Key, w.prefix) {
				w.ch <- ev
			}
		}
	}
}

// caughtUp reports whether w is still subscribed with nothing queued, and
// the revision it has then been given every event up to: the hub queues
// all of a revision's events at once under mu, so with w's queue empty its
// reader has taken every event at or below h.rev. A dropped watcher may
// have had a revision left out, so it is never caught up.
func (h *hub) caughtUp(w *watcher) (uint64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.watchers[w]; !ok || len(w.ch) > 0 {
		return 0, false
	}
	return h.rev, true
}

// reset drops every watcher after a snapshot restore replaced the state.
func (h *hub) reset(rev uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.watchers {
		h.drop(w)
	}
	h.rev = rev
}

// stop drops every watcher and refuses new ones.
func (h *hub) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for w := range h.watchers {
		h.drop(w)
	}
}

// close stops the hub and waits for the watch goroutines to finish.
func (h *hub) close() {
	h.stop()
	h.wg.Wait()
}
