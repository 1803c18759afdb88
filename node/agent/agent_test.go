package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

// scriptedPods is an API server whose pod watches follow a script: the
// i-th Watch sends watches[i]'s bookmarks, then ends with its error (or
// stays open when it has none). It records every List and Watch.
type scriptedPods struct {
	skiffv1connect.UnimplementedPodServiceHandler
	lists   []uint64 // the versions the Lists answer, in turn
	watches []scriptedWatch

	mu    sync.Mutex
	calls []string
	idle  chan struct{} // closed when a watch stays open
}

type scriptedWatch struct {
	bookmarks []uint64
	err       connect.Code // 0: stay open
}

func (f *scriptedPods) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *scriptedPods) List(_ context.Context, r *connect.Request[skiffv1.ListRequest]) (*connect.Response[skiffv1.PodList], error) {
	f.mu.Lock()
	rev := f.lists[0]
	f.lists = f.lists[1:]
	f.mu.Unlock()
	f.record("list %s", r.Msg.FieldSelector)
	return connect.NewResponse(&skiffv1.PodList{ResourceVersion: rev}), nil
}

func (f *scriptedPods) Watch(ctx context.Context, r *connect.Request[skiffv1.WatchRequest], st *connect.ServerStream[skiffv1.PodWatchEvent]) error {
	f.record("watch %s from %d bookmarks=%t", r.Msg.FieldSelector, r.Msg.ResourceVersion, r.Msg.AllowBookmarks)
	f.mu.Lock()
	w := f.watches[0]
	f.watches = f.watches[1:]
	f.mu.Unlock()
	for _, rv := range w.bookmarks {
		ev := &skiffv1.PodWatchEvent{Type: skiffv1.EventType_EVENT_TYPE_BOOKMARK, Object: &skiffv1.Pod{Metadata: &skiffv1.ObjectMeta{ResourceVersion: rv}}}
		if err := st.Send(ev); err != nil {
			return err
		}
	}
	if w.err != 0 {
		return connect.NewError(w.err, errors.New("scripted end"))
	}
	close(f.idle)
	<-ctx.Done()
	return nil
}

// TestWatchResumesFromBookmark: when the pod watch ends, the agent resumes
// from the newest bookmark instead of listing again; it lists again only
// when the server says the version is expired. Bookmarks start no worker.
func TestWatchResumesFromBookmark(t *testing.T) {
	api := &scriptedPods{
		lists: []uint64{10, 70},
		watches: []scriptedWatch{
			{bookmarks: []uint64{50}, err: connect.CodeUnavailable},
			{bookmarks: []uint64{60}, err: connect.CodeUnavailable},
			{err: connect.CodeOutOfRange},
			{},
		},
		idle: make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.Handle(skiffv1connect.NewPodServiceHandler(api))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	cri := newFakeCRI()
	a := New(Config{
		NodeName: "node-1", Runtime: cri, Images: cri, LogDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler),
		Pods: skiffv1connect.NewPodServiceClient(srv.Client(), srv.URL),
	})
	a.timing.rewatch = time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	select {
	case <-api.idle:
	case <-ctx.Done():
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	sel := "spec.nodeName=node-1"
	want := []string{
		"list " + sel,
		"watch " + sel + " from 10 bookmarks=true",
		"watch " + sel + " from 50 bookmarks=true",
		"watch " + sel + " from 60 bookmarks=true",
		"list " + sel,
		"watch " + sel + " from 70 bookmarks=true",
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	if !slices.Equal(api.calls, want) {
		t.Errorf("calls:\n got %q\nwant %q", api.calls, want)
	}
	if len(cri.creates) != 0 {
		t.Errorf("a bookmark started pods: %d creates", len(cri.creates))
	}
}
