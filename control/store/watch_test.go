package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestWatchReplayThenLive(t *testing.T) {
	s := openTest(t, "", nil)
	ctx := testCtx(t)
	a := mustCreate(t, s, "/pods/default/a", "a1")
	mustCreate(t, s, "/svc/default/a", "s1") // other prefix: filtered out
	if _, err := s.Update(ctx, "/pods/default/a", []byte("a2"), 0); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, "/pods/default/b", "b1")

	ch, err := s.Watch(ctx, "/pods/", a.ModRevision)
	if err != nil {
		t.Fatal(err)
	}
	replayed := collect(t, ch, 2)
	if got, want := describe(replayed), []string{"PUT /pods/default/a", "PUT /pods/default/b"}; !slices.Equal(got, want) {
		t.Fatalf("replayed %v, want %v", got, want)
	}
	if string(replayed[0].KV.Value) != "a2" || replayed[0].PrevKV == nil || string(replayed[0].PrevKV.Value) != "a1" {
		t.Errorf("update event %+v, want a1 -> a2", replayed[0])
	}
	if replayed[1].PrevKV != nil {
		t.Errorf("create event has PrevKV %+v", replayed[1].PrevKV)
	}

	del, err := s.Delete(ctx, "/pods/default/a", 0)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, "/svc/default/b", "s2")
	mustCreate(t, s, "/pods/default/c", "c1")
	live := collect(t, ch, 2)
	if got, want := describe(live), []string{"DELETE /pods/default/a", "PUT /pods/default/c"}; !slices.Equal(got, want) {
		t.Fatalf("live %v, want %v", got, want)
	}
	d := live[0]
	if d.Revision != del.ModRevision || d.KV.ModRevision != del.ModRevision || string(d.KV.Value) != "a2" ||
		d.PrevKV == nil || d.PrevKV.ModRevision >= del.ModRevision {
		t.Errorf("delete event %+v (prev %+v), Delete returned %+v", d, d.PrevKV, del)
	}
	assertNoEvent(t, ch)
}

func TestWatchFromNow(t *testing.T) {
	s := openTest(t, "", nil)
	ctx := testCtx(t)
	mustCreate(t, s, "/pods/old", "x")
	ch, err := s.Watch(ctx, "/pods/", 0)
	if err != nil {
		t.Fatal(err)
	}
	kv := mustCreate(t, s, "/pods/new", "y")
	evs := collect(t, ch, 1)
	if evs[0].KV.Key != "/pods/new" || evs[0].Revision != kv.ModRevision {
		t.Errorf("got %+v, want the create of /pods/new at %d", evs[0], kv.ModRevision)
	}
}

// TestWatchFromTheFuture: a revision the store has not reached is an error
// that says so, not a wait; the current revision itself is fine.
func TestWatchFromTheFuture(t *testing.T) {
	s := openTest(t, "", nil)
	ctx := testCtx(t)
	kv := mustCreate(t, s, "/pods/a", "x")
	if _, err := s.Watch(ctx, "/pods/", s.Revision()+5); !errors.Is(err, ErrFutureRevision) || !strings.Contains(err.Error(), "is newer than this store's") {
		t.Errorf("Watch from the future: %v, want ErrFutureRevision", err)
	}
	if _, err := s.Watch(ctx, "/pods/", kv.ModRevision); err != nil {
		t.Errorf("Watch from the newest revision: %v", err)
	}
}

// TestWatchNoGapUnderLoad starts a watch from an old revision while a writer
// is busy: the watcher sees every write after that revision exactly once,
// in order, across the switch from history to live events.
func TestWatchNoGapUnderLoad(t *testing.T) {
	s := openTest(t, "", nil)
	ctx := testCtx(t)
	const total = 300
	revs := make(chan uint64, total)
	writerDone := make(chan error, 1)
	go func() {
		defer close(revs)
		for i := range total {
			kv, err := s.Create(ctx, fmt.Sprintf("/load/%04d", i), []byte("v"))
			if err != nil {
				writerDone <- err
				return
			}
			revs <- kv.ModRevision
		}
		writerDone <- nil
	}()

	var written []uint64
	for len(written) < 50 {
		written = append(written, <-revs)
	}
	from := written[10]
	ch, err := s.Watch(ctx, "/load/", from)
	if err != nil {
		t.Fatal(err)
	}
	for r := range revs {
		written = append(written, r)
	}
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	want := written[11:]
	evs := collect(t, ch, len(want))
	got := make([]uint64, len(evs))
	for i, ev := range evs {
		got[i] = ev.Revision
	}
	if !slices.Equal(got, want) {
		t.Fatalf("watched revisions differ from written ones:\n got %v\nwant %v", got, want)
	}
	assertNoEvent(t, ch)
}

func TestWatchExpired(t *testing.T) {
	s := openTest(t, "", func(c *Config) { c.historyLimit = 5 })
	ctx := testCtx(t)
	var kvs []KV
	for i := range 10 {
		kvs = append(kvs, mustCreate(t, s, fmt.Sprintf("/k/%d", i), "v"))
	}
	// The last 5 events are kept: resuming after kvs[4] needs kvs[5:] only.
	oldestOK := kvs[4].ModRevision
	tests := []struct {
		name    string
		rev     uint64
		wantErr bool
		want    int
	}{
		{"first revision", kvs[0].ModRevision, true, 0},
		{"just too old", oldestOK - 1, true, 0},
		{"oldest resumable", oldestOK, false, 5},
		{"recent", kvs[8].ModRevision, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ch, err := s.Watch(wctx, "/k/", tt.rev)
			if tt.wantErr {
				if !errors.Is(err, ErrExpired) || !strings.Contains(err.Error(), "too old") {
					t.Fatalf("Watch(%d) err = %v, want ErrExpired", tt.rev, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			evs := collect(t, ch, tt.want)
			if evs[0].Revision <= tt.rev {
				t.Errorf("first event at %d, not after %d", evs[0].Revision, tt.rev)
			}
			assertNoEvent(t, ch)
		})
	}
}

// TestWatchSlowConsumer: a watcher that does not read must not hold up
// writes; its channel is closed once its queue overflows, after the events
// queued so far, with no gap among them.
func TestWatchSlowConsumer(t *testing.T) {
	s := openTest(t, "", func(c *Config) { c.watchBuffer = 4 })
	ctx := testCtx(t)
	ch, err := s.Watch(ctx, "/", 0)
	if err != nil {
		t.Fatal(err)
	}
	var first uint64
	for i := range 20 {
		kv := mustCreate(t, s, fmt.Sprintf("/k/%d", i), "v") // must not block
		if i == 0 {
			first = kv.ModRevision
		}
	}
	var got []uint64
	timeout := time.After(5 * time.Second)
	for closed := false; !closed; {
		select {
		case ev, ok := <-ch:
			if !ok {
				closed = true
				break
			}
			got = append(got, ev.Revision)
		case <-timeout:
			t.Fatalf("channel of an overflowed watcher not closed; got %v", got)
		}
	}
	if len(got) == 0 || len(got) >= 20 {
		t.Fatalf("got %d events before close, want some but not all 20", len(got))
	}
	for i, r := range got {
		if r != first+uint64(i) {
			t.Fatalf("events %v are not the contiguous run from %d", got, first)
		}
	}
}

func TestWatchCancelClosesChannel(t *testing.T) {
	s := openTest(t, "", nil)
	tests := []struct {
		name string
		stop func(cancel context.CancelFunc)
	}{
		{"ctx cancelled", func(cancel context.CancelFunc) { cancel() }},
		{"store closed", func(context.CancelFunc) { s.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ch, err := s.Watch(ctx, "/", 0)
			if err != nil {
				t.Fatal(err)
			}
			tt.stop(cancel)
			select {
			case _, ok := <-ch:
				if ok {
					t.Fatal("got an event, want the channel closed")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("channel not closed")
			}
		})
	}
}

// collect reads n events from ch or fails.
func collect(t *testing.T, ch <-chan Event, n int) []Event {
	t.Helper()
	var evs []Event
	timeout := time.After(5 * time.Second)
	for len(evs) < n {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("channel closed after %d of %d events: %v", len(evs), n, describe(evs))
			}
			evs = append(evs, ev)
		case <-timeout:
			t.Fatalf("got %d of %d events: %v", len(evs), n, describe(evs))
		}
	}
	return evs
}

func assertNoEvent(t *testing.T, ch <-chan Event) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if ok {
			t.Errorf("unexpected event %s %s at %d", ev.Type, ev.KV.Key, ev.Revision)
		}
	case <-time.After(50 * time.Millisecond):
	}
}

func describe(evs []Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Type.String()+" "+ev.KV.Key)
	}
	return out
}
