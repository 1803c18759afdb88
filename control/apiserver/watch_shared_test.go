package apiserver

import (
	"context"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
	"skiff.dev/skiff/control/store"
)

// TestWatchSharedEvents: watches with different selectors, in both codecs,
// see the same store events, decoded and encoded once for all of them; each
// still gets its own event types. A pod relabelled from app=web to app=api
// is MODIFIED to a watch of every pod, DELETED to a watch of app=web and
// ADDED to one of app=api.
func TestWatchSharedEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := realServer(t)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	pods := skiffv1connect.NewPodServiceClient(srv.Client(), srv.URL)
	jsonPods := skiffv1connect.NewPodServiceClient(srv.Client(), srv.URL, connect.WithProtoJSON())

	from, err := pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	type watch struct {
		name string
		st   *connect.ServerStreamForClient[skiffv1.PodWatchEvent]
		want []string
	}
	open := func(name string, c skiffv1connect.PodServiceClient, labels string, want ...string) watch {
		st, err := c.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{LabelSelector: labels, ResourceVersion: from.Msg.ResourceVersion}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return watch{name, st, want}
	}
	watches := []watch{
		open("all", pods, "", "ADDED web", "MODIFIED api", "DELETED api"),
		open("all, json", jsonPods, "", "ADDED web", "MODIFIED api", "DELETED api"),
		open("app=web", pods, "app=web", "ADDED web", "DELETED api"),
		open("app=web, json", jsonPods, "app=web", "ADDED web", "DELETED api"),
		open("app=api", pods, "app=api", "ADDED api", "DELETED api"),
	}

	p := pod("p")
	p.Metadata.Labels = map[string]string{"app": "web"}
	res, err := pods.Create(ctx, connect.NewRequest(p))
	if err != nil {
		t.Fatal(err)
	}
	p = res.Msg
	p.Metadata.Labels["app"] = "api"
	if _, err := pods.Update(ctx, connect.NewRequest(p)); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: "p"})); err != nil {
		t.Fatal(err)
	}

	for _, w := range watches {
		var got []string
		var revs []uint64
		for range w.want {
			if !w.st.Receive() {
				t.Fatalf("watch %s: ended after %v: %v", w.name, got, w.st.Err())
			}
			m := w.st.Msg()
			got = append(got, fmt.Sprintf("%s %s", strings.TrimPrefix(m.Type.String(), "EVENT_TYPE_"), m.Object.Metadata.Labels["app"]))
			revs = append(revs, m.Object.Metadata.ResourceVersion)
		}
		if !slices.Equal(got, w.want) {
			t.Errorf("watch %s got %q, want %q", w.name, got, w.want)
		}
		if !slices.IsSorted(revs) || revs[0] <= from.Msg.ResourceVersion {
			t.Errorf("watch %s: resourceVersions %v, want increasing after %d", w.name, revs, from.Msg.ResourceVersion)
		}
	}
	// Three store events, each decoded once; five messages (ADDED, MODIFIED
	// and DELETED of every pod, DELETED and ADDED of a selector) shared by
	// the watches that sent them.
	if n := len(s.b.decoded.entries); n != 3 {
		t.Errorf("decoded %d store values, want 3", n)
	}
}

// TestDecodedCacheBound: a value is decoded once and shared; the cache
// holds at most decodedEvents values, dropping the oldest.
func TestDecodedCacheBound(t *testing.T) {
	var c decodedCache
	val, err := encode(pod("p"))
	if err != nil {
		t.Fatal(err)
	}
	kv := func(rev uint64) store.KV { return store.KV{Key: "/pods/default/p", Value: val, ModRevision: rev} }
	first, err := c.decode(kinds.Pod, kv(1))
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := c.decode(kinds.Pod, kv(1)); again != first {
		t.Error("the same value was decoded twice")
	}
	if rv := first.GetMetadata().GetResourceVersion(); rv != 1 {
		t.Errorf("resourceVersion %d, want 1", rv)
	}
	for rev := uint64(2); rev <= decodedEvents+1; rev++ {
		if _, err := c.decode(kinds.Pod, kv(rev)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.entries); n != decodedEvents {
		t.Errorf("holds %d values, want the bound %d", n, decodedEvents)
	}
	if again, _ := c.decode(kinds.Pod, kv(1)); again == first {
		t.Error("the oldest value was kept past the bound")
	}
	if _, err := c.decode(kinds.Pod, store.KV{Key: "/pods/default/bad", Value: []byte{0xff}, ModRevision: 9}); err == nil {
		t.Error("a corrupt value decoded")
	}
}

// BenchmarkWatchFanOut: 50 watches of every pod while pods are created, as
// skiff bench store's WATCH row; each store event is decoded and encoded
// once for all of them. Reports events delivered per second.
func BenchmarkWatchFanOut(b *testing.B) {
	const watchers = 50
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.Open(ctx, store.Config{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	s := New(Config{Store: st})
	if err := s.Init(ctx); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	pods := skiffv1connect.NewPodServiceClient(srv.Client(), srv.URL)
	from, err := pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan int, watchers)
	for range watchers {
		w, err := pods.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{ResourceVersion: from.Msg.ResourceVersion}))
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		go func() {
			n := 0
			for n < b.N && w.Receive() {
				n++
			}
			done <- n
		}()
	}
	b.ResetTimer()
	for i := range b.N {
		if _, err := pods.Create(ctx, connect.NewRequest(pod(fmt.Sprintf("p-%d", i)))); err != nil {
			b.Fatal(err)
		}
	}
	for range watchers {
		if n := <-done; n != b.N {
			b.Fatalf("a watch saw %d of %d events", n, b.N)
		}
	}
	b.ReportMetric(float64(watchers*b.N)/b.Elapsed().Seconds(), "events/s")
}
