package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// TestClusterWatchResumesAcrossServers watches namespaces on the leader
// from a list's revision under a write load, kills the leader, and resumes
// the watch on another server from the last revision seen: the events seen
// are the namespaces created, each once, in increasing revision order.
func TestClusterWatchResumesAcrossServers(t *testing.T) {
	c := startServers(t)
	leader := c.leader()
	l, err := c.list(leader, false)
	if err != nil {
		t.Fatal(err)
	}
	w := &resumingWatch{servers: c.all}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(ctx, leader, l.GetResourceVersion())
	}()
	stopWatch := func() {
		cancel()
		<-done
	}
	t.Cleanup(stopWatch)
	eventually(t, 10*time.Second, w.opened,
		func() string { return "the watch on the leader did not open: " + w.summary() })

	load := startLoad(c, 4, "watched")
	eventually(t, 20*time.Second, func() bool { return w.count() >= 20 },
		func() string { return "the watch on the leader saw too few events: " + w.summary() })
	leader.kill()
	t.Logf("killed the leader %s with SIGKILL after the watch saw %d events", leader.name, w.count())
	eventually(t, 20*time.Second, func() bool { return w.resumedElsewhere(leader) && load.ackedAfter(leader.killAt) >= 20 },
		func() string {
			return "the watch did not resume on another server, or writes did not go on: " + w.summary() + "; load: " + load.summary()
		})
	load.stop()
	t.Logf("load: %s", load.summary())

	live := c.running()[0]
	l, err = c.list(live, false)
	if err != nil {
		t.Fatal(err)
	}
	listed := nsRevisions(t, l)
	load.checkAgainst(t, listed)
	delete(listed, "default") // created before the watch's revision
	var diff string
	eventually(t, 20*time.Second, func() bool {
		diff = diffRevisions(w.added(), listed)
		return diff == ""
	}, func() string { return "the namespaces watched are not those listed: " + diff + "; " + w.summary() })
	stopWatch()
	t.Logf("watch: %s", w.summary())

	// Each event once, in strictly increasing revision order, and only
	// ADDED ones: the load creates and nothing else changes a namespace.
	events, streams := w.result()
	var last uint64
	seen := map[string]bool{}
	for _, ev := range events {
		if ev.typ != skiffv1.EventType_EVENT_TYPE_ADDED {
			t.Errorf("event %s %s at rv %d, want only ADDED", ev.typ, ev.name, ev.rv)
		}
		if seen[ev.name] {
			t.Errorf("namespace %s seen twice (again at rv %d)", ev.name, ev.rv)
		}
		seen[ev.name] = true
		if ev.rv <= last {
			t.Errorf("event for %s at rv %d came after one at rv %d", ev.name, ev.rv, last)
		}
		last = ev.rv
	}
	// The first stream was the leader's, and it broke when the leader was
	// killed; another server carried on from where it ended.
	if len(streams) < 2 || streams[0].server != leader || streams[0].events == 0 || streams[0].err == nil {
		t.Errorf("watch streams %s: want the first on the leader %s, with events, broken", w.summary(), leader.name)
	}
}

// resumingWatch follows the namespaces through a watch that it resumes on the
// next server, from the last revision seen, whenever it breaks.
type resumingWatch struct {
	servers []*serverProc

	mu      sync.Mutex
	events  []watchedEvent
	streams []watchStream
}

type watchedEvent struct {
	typ  skiffv1.EventType
	name string
	rv   uint64
}

// watchStream is one watch call: where, from which revision, how many
// events it brought and how it ended.
type watchStream struct {
	server *serverProc
	from   uint64
	events int
	opened bool
	err    error
}

// run watches from rv on s, then on the next server each time the watch
// breaks, until ctx ends. A bookmark moves the resume point on.
func (w *resumingWatch) run(ctx context.Context, s *serverProc, rv uint64) {
	next := 0
	for i, o := range w.servers {
		if o == s {
			next = i
		}
	}
	for tries := 0; ctx.Err() == nil && tries < 1000; tries++ {
		s := w.servers[next%len(w.servers)]
		next++
		w.mu.Lock()
		w.streams = append(w.streams, watchStream{server: s, from: rv})
		idx := len(w.streams) - 1
		w.mu.Unlock()
		stream, err := s.watchNamespaces.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{ResourceVersion: rv, AllowBookmarks: true}))
		if err == nil {
			w.mu.Lock()
			w.streams[idx].opened = true
			w.mu.Unlock()
			for stream.Receive() {
				ev := stream.Msg()
				rv = ev.GetObject().GetMetadata().GetResourceVersion()
				if ev.GetType() == skiffv1.EventType_EVENT_TYPE_BOOKMARK {
					continue
				}
				w.mu.Lock()
				w.events = append(w.events, watchedEvent{typ: ev.GetType(), name: ev.GetObject().GetMetadata().GetName(), rv: rv})
				w.streams[idx].events++
				w.mu.Unlock()
			}
			err = stream.Err()
			_ = stream.Close()
		}
		w.mu.Lock()
		w.streams[idx].err = err
		w.mu.Unlock()
	}
}

// opened says whether the first watch call has been answered.
func (w *resumingWatch) opened() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.streams) > 0 && w.streams[0].opened
}

// count counts the events seen.
func (w *resumingWatch) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.events)
}

// resumedElsewhere says whether a watch on a server other than dead has
// brought events after dead was killed.
func (w *resumingWatch) resumedElsewhere(dead *serverProc) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, s := range w.streams {
		if i > 0 && s.server != dead && s.opened && s.events > 0 {
			return true
		}
	}
	return false
}

// added maps the namespaces seen ADDED to their revisions.
func (w *resumingWatch) added() map[string]uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]uint64{}
	for _, ev := range w.events {
		if ev.typ == skiffv1.EventType_EVENT_TYPE_ADDED {
			out[ev.name] = ev.rv
		}
	}
	return out
}

func (w *resumingWatch) result() ([]watchedEvent, []watchStream) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]watchedEvent(nil), w.events...), append([]watchStream(nil), w.streams...)
}

// summary says what the watch did, stream by stream.
func (w *resumingWatch) summary() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "%d events over %d watch calls:", len(w.events), len(w.streams))
	for i, s := range w.streams {
		if i >= 3 && i < len(w.streams)-5 {
			if i == 3 {
				b.WriteString(" ...")
			}
			continue
		}
		fmt.Fprintf(&b, " [%s from rv %d: %d events, ended: %v]", s.server.name, s.from, s.events, s.err)
	}
	return b.String()
}
