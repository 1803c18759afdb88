package apiserver

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/store"
)

// TestWatchBookmarks: a watcher whose selector matches nothing keeps a
// resume version recent through bookmarks. Resuming from the version it
// listed at, once the store's history has moved on, is expired; resuming
// from its last bookmark is not, and misses nothing after it. A watcher that
// did not ask for bookmarks gets none.
func TestWatchBookmarks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := realServer(t)
	st := s.b.store.(*store.Store)
	s.b.bookmarkInterval = 10 * time.Millisecond
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	pods := skiffv1connect.NewPodServiceClient(srv.Client(), srv.URL)
	const onNode = "spec.nodeName=node-1"

	list, err := pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{FieldSelector: onNode}))
	if err != nil {
		t.Fatal(err)
	}
	listed := list.Msg.ResourceVersion
	watch := func(ctx context.Context, rev uint64, bookmarks bool) *connect.ServerStreamForClient[skiffv1.PodWatchEvent] {
		t.Helper()
		w, err := pods.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{FieldSelector: onNode, ResourceVersion: rev, AllowBookmarks: bookmarks}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() })
		return w
	}
	marked := watch(ctx, listed, true)
	plainCtx, plainCancel := context.WithCancel(ctx)
	defer plainCancel()
	plain := watch(plainCtx, listed, false)

	// Writes to other objects only: a pod on another node, then enough
	// writes elsewhere in the store to trim its history past listed.
	if _, err := pods.Create(ctx, connect.NewRequest(pod("elsewhere"))); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Bind(ctx, connect.NewRequest(&skiffv1.BindRequest{Name: "elsewhere", NodeName: "node-2"})); err != nil {
		t.Fatal(err)
	}
	last := fillHistory(ctx, t, st)

	var mark uint64
	for mark < last && marked.Receive() {
		ev := marked.Msg()
		if ev.Type != skiffv1.EventType_EVENT_TYPE_BOOKMARK {
			t.Fatalf("got %s %s, want only bookmarks", ev.Type, ev.Object.GetMetadata().GetName())
		}
		rv := ev.Object.GetMetadata().GetResourceVersion()
		if want := (&skiffv1.Pod{Metadata: &skiffv1.ObjectMeta{ResourceVersion: rv}}); !proto.Equal(ev.Object, want) {
			t.Fatalf("bookmark object %v, want %v", ev.Object, want)
		}
		if rv <= mark || rv > last {
			t.Fatalf("bookmark at %d after %d; the newest write is %d", rv, mark, last)
		}
		mark = rv
	}
	if mark < last {
		t.Fatalf("bookmarks stopped at %d before %d: %v", mark, last, marked.Err())
	}

	// The watch without bookmarks got nothing at all.
	time.AfterFunc(100*time.Millisecond, plainCancel)
	if plain.Receive() {
		t.Errorf("watch without allow_bookmarks got %s", plain.Msg().Type)
	}

	// Resuming from the listed version is expired; from the bookmark, fine.
	old := watch(ctx, listed, false)
	if old.Receive() || connect.CodeOf(old.Err()) != connect.CodeOutOfRange {
		t.Errorf("watch from %d after the history moved on: err %v, want OutOfRange (expired)", listed, old.Err())
	}
	resumed := watch(ctx, mark, true)
	if _, err := pods.Create(ctx, connect.NewRequest(pod("p"))); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Bind(ctx, connect.NewRequest(&skiffv1.BindRequest{Name: "p", NodeName: "node-1"})); err != nil {
		t.Fatal(err)
	}
	for resumed.Receive() {
		ev := resumed.Msg()
		if ev.Type == skiffv1.EventType_EVENT_TYPE_BOOKMARK {
			continue
		}
		if ev.Type != skiffv1.EventType_EVENT_TYPE_ADDED || ev.Object.GetMetadata().GetName() != "p" {
			t.Fatalf("resumed watch got %s %s, want ADDED p", ev.Type, ev.Object.GetMetadata().GetName())
		}
		return
	}
	t.Fatalf("resumed watch from bookmark %d ended: %v", mark, resumed.Err())
}

// fillHistory writes more events outside the API's kinds than the store
// keeps for resuming watches (10000), and returns the last revision.
func fillHistory(ctx context.Context, t *testing.T, st *store.Store) uint64 {
	t.Helper()
	const perTxn = 128
	var last uint64
	for i := 0; i*perTxn <= 10000; i++ {
		var txn store.Txn
		for j := range perTxn {
			txn.Ops = append(txn.Ops, store.CreateOp(fmt.Sprintf("/test-fill/%d-%d", i, j), []byte("x")))
		}
		res, err := st.Txn(ctx, txn)
		if err != nil {
			t.Fatal(err)
		}
		last = res.KVs[0].ModRevision
	}
	return last
}
