package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
)

// scriptedWatch serves pod watches: the first sends an ADDED pod at 5 and a
// bookmark at 9, then breaks; the next stays open. It records each Watch.
type scriptedWatch struct {
	skiffv1connect.UnimplementedPodServiceHandler
	mu    sync.Mutex
	calls []string
	open  chan struct{} // closed when the second watch is open
}

func (f *scriptedWatch) Watch(ctx context.Context, r *connect.Request[skiffv1.WatchRequest], st *connect.ServerStream[skiffv1.PodWatchEvent]) error {
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf("from %d bookmarks=%t", r.Msg.ResourceVersion, r.Msg.AllowBookmarks))
	n := len(f.calls)
	f.mu.Unlock()
	if n > 1 {
		close(f.open)
		<-ctx.Done()
		return nil
	}
	for _, ev := range []*skiffv1.PodWatchEvent{
		{Type: skiffv1.EventType_EVENT_TYPE_ADDED, Object: &skiffv1.Pod{Metadata: &skiffv1.ObjectMeta{Name: "p", ResourceVersion: 5}}},
		{Type: skiffv1.EventType_EVENT_TYPE_BOOKMARK, Object: &skiffv1.Pod{Metadata: &skiffv1.ObjectMeta{ResourceVersion: 9}}},
	} {
		if err := st.Send(ev); err != nil {
			return err
		}
	}
	return connect.NewError(connect.CodeUnavailable, errors.New("scripted break"))
}

// TestFollowResumesFromBookmark: a bookmark kicks no scheduling pass, and
// a broken watch resumes from the newest bookmark, missing nothing, so it
// needs no extra pass either.
func TestFollowResumesFromBookmark(t *testing.T) {
	api := &scriptedWatch{open: make(chan struct{})}
	mux := http.NewServeMux()
	mux.Handle(skiffv1connect.NewPodServiceHandler(api))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	pods := skiffv1connect.NewPodServiceClient(srv.Client(), srv.URL)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var notified atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		kinds.FollowWatch(ctx, slog.New(slog.DiscardHandler), "pods", func(ctx context.Context, rev uint64) (*connect.ServerStreamForClient[skiffv1.PodWatchEvent], error) {
			return pods.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{ResourceVersion: rev, AllowBookmarks: true}))
		}, func(st *connect.ServerStreamForClient[skiffv1.PodWatchEvent]) (skiffv1.EventType, uint64) {
			return st.Msg().GetType(), st.Msg().GetObject().GetMetadata().GetResourceVersion()
		}, func() { notified.Add(1) })
	}()
	select {
	case <-api.open:
	case <-ctx.Done():
	}
	cancel()
	<-done
	api.mu.Lock()
	defer api.mu.Unlock()
	if want := []string{"from 0 bookmarks=true", "from 9 bookmarks=true"}; !slices.Equal(api.calls, want) {
		t.Errorf("watches %q, want %q", api.calls, want)
	}
	if n := notified.Load(); n != 1 {
		t.Errorf("notified %d times, want once (for the ADDED pod only)", n)
	}
}
