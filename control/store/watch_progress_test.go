package store

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestWatchProgressQuiet: a watch whose prefix sees no write still learns,
// through progress events, that the store has moved on; one opened without
// WithProgress gets none.
func TestWatchProgressQuiet(t *testing.T) {
	s := openTest(t, "", nil)
	ctx := testCtx(t)
	start := mustCreate(t, s, "/a/0", "v").ModRevision
	with, err := s.Watch(ctx, "/a/", start, WithProgress(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	without, err := s.Watch(ctx, "/a/", start)
	if err != nil {
		t.Fatal(err)
	}
	var other uint64
	for i := range 5 {
		other = mustCreate(t, s, fmt.Sprintf("/b/%d", i), "v").ModRevision
	}
	prev := start
	for prev < other {
		ev := collect(t, with, 1)[0]
		if ev.Type != EventProgress {
			t.Fatalf("got %s %s, want only progress events", ev.Type, ev.KV.Key)
		}
		if ev.Revision < prev || ev.Revision > other {
			t.Fatalf("progress at %d after %d; the newest write is %d", ev.Revision, prev, other)
		}
		prev = ev.Revision
	}
	assertNoEvent(t, without)

	// Resuming from the progress revision misses nothing and repeats nothing.
	a1 := mustCreate(t, s, "/a/1", "v")
	resumed, err := s.Watch(ctx, "/a/", prev)
	if err != nil {
		t.Fatal(err)
	}
	if ev := collect(t, resumed, 1)[0]; ev.KV.Key != "/a/1" || ev.Revision != a1.ModRevision {
		t.Errorf("resumed watch got %s %s at %d, want PUT /a/1 at %d", ev.Type, ev.KV.Key, ev.Revision, a1.ModRevision)
	}
}

// TestWatchProgressOracle checks every progress event's claim against what
// was written, while writes under the prefix and outside it race the
// ticks: the events at or below a progress revision all came before it,
// and none after it.
func TestWatchProgressOracle(t *testing.T) {
	s := openTest(t, "", nil)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	from := s.Revision()
	ch, err := s.Watch(ctx, "/a/", from, WithProgress(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	const n = 150
	var mu sync.Mutex
	var written []uint64 // revisions of the writes under /a/
	var wg sync.WaitGroup
	for _, p := range []string{"/a/", "/b/"} {
		wg.Go(func() {
			for i := range n {
				kv, err := s.Create(ctx, fmt.Sprintf("%s%d", p, i), []byte("v"))
				if err != nil {
					t.Error(err)
					return
				}
				if p == "/a/" {
					mu.Lock()
					written = append(written, kv.ModRevision)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	last := s.Revision()

	var seen []uint64 // revisions of the /a/ events received so far
	progress, at := 0, from
	for len(seen) < n || at < last {
		ev := collect(t, ch, 1)[0]
		if ev.Type != EventProgress {
			if ev.Revision <= at {
				t.Fatalf("event at %d after progress at %d", ev.Revision, at)
			}
			seen = append(seen, ev.Revision)
			continue
		}
		progress++
		if ev.Revision < at {
			t.Fatalf("progress went back from %d to %d", at, ev.Revision)
		}
		at = ev.Revision
		want := 0
		for _, r := range written {
			if r <= at {
				want++
			}
		}
		if len(seen) != want {
			t.Fatalf("progress at %d after %d events under the prefix; %d were written at or below it", at, len(seen), want)
		}
	}
	if progress == 0 {
		t.Error("no progress event")
	}
}
