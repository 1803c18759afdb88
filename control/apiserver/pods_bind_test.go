package apiserver

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
	"skiff.dev/skiff/control/store"
)

// TestBindBatch: each binding of a batch succeeds or fails by itself, with
// Bind's checks, and those that succeed are written in one Raft entry that
// watches see as one MODIFIED event a pod.
func TestBindBatch(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	for _, n := range []string{"p0", "p1", "p3", "p4", "p5", "p7"} {
		a.create(t, pod(n))
	}
	held := pod("p8")
	held.Metadata.Finalizers = []string{"example.com/hold"}
	a.create(t, held)
	if _, err := a.pods.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: "p8"})); err != nil {
		t.Fatal(err)
	}
	if _, err := a.pods.Bind(ctx, connect.NewRequest(&skiffv1.BindRequest{Name: "p1", NodeName: "node-9"})); err != nil {
		t.Fatal(err)
	}
	p4, _ := a.get(t, "p4")
	watch, err := a.pods.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{ResourceVersion: p4.Metadata.ResourceVersion}))
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()

	res, err := a.pods.BindBatch(ctx, connect.NewRequest(&skiffv1.BindBatchRequest{Bindings: []*skiffv1.BindRequest{
		{Name: "p0", NodeName: "node-1"},
		{Name: "p1", NodeName: "node-1"},
		{Name: "missing", NodeName: "node-1"},
		{Name: "p3", NodeName: "node-1", Uid: "not-its-uid"},
		{Name: "p4", NodeName: "node-1", ResourceVersion: p4.Metadata.ResourceVersion - 1},
		{Name: "p5", NodeName: "Bad_Node"},
		{Name: "p0", NodeName: "node-2"},
		{Namespace: "default", Name: "p7", NodeName: "node-2"},
		{Name: "p8", NodeName: "node-1"},
	}}))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ code, msg string }{
		{"", ""},
		{"failed_precondition", `pod "default/p1" is already bound to node "node-9"`},
		{"not_found", `pod "default/missing" not found`},
		{"aborted", "the object was replaced (uid"},
		{"aborted", "the object has been modified"},
		{"invalid_argument", "nodeName"},
		{"invalid_argument", `bindings[6]: pod "default/p0" is bound by bindings[0] of the same batch`},
		{"", ""},
		{"failed_precondition", `pod "default/p8" is being deleted`},
	}
	got := res.Msg.GetResults()
	if len(got) != len(want) {
		t.Fatalf("%d results, want %d: %v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.GetCode() != w.code || !strings.Contains(g.GetMessage(), w.msg) || (w.code == "") != (g.GetResourceVersion() != 0) {
			t.Errorf("result %d = %v, want code %q message containing %q", i, g, w.code, w.msg)
		}
	}
	if got[0].GetResourceVersion() != got[7].GetResourceVersion() {
		t.Errorf("bound at revisions %d and %d: want one store write", got[0].GetResourceVersion(), got[7].GetResourceVersion())
	}
	for name, node := range map[string]string{"p0": "node-1", "p7": "node-2", "p3": "", "p4": "", "p5": "", "p1": "node-9"} {
		p, err := a.get(t, name)
		if err != nil || p.Spec.NodeName != node {
			t.Errorf("pod %s bound to %q (%v), want %q", name, p.GetSpec().GetNodeName(), err, node)
		}
		if node == "node-1" || node == "node-2" {
			if c := p.Status.Conditions; len(c) != 1 || c[0].Type != "PodScheduled" || c[0].Status != "True" {
				t.Errorf("pod %s conditions %v, want PodScheduled=True", name, c)
			}
		}
	}
	// The watch sees p0 and p7 MODIFIED, bound, at the batch's revision
	// (after p1's Bind and p8's deletion mark, which came before).
	seen := map[string]bool{}
	for len(seen) < 2 && watch.Receive() {
		ev := watch.Msg()
		o := ev.GetObject()
		if o.GetMetadata().GetResourceVersion() != got[0].GetResourceVersion() {
			continue
		}
		if ev.GetType() != skiffv1.EventType_EVENT_TYPE_MODIFIED || o.GetSpec().GetNodeName() == "" {
			t.Errorf("watch: %v %s bound to %q, want MODIFIED and bound", ev.GetType(), o.GetMetadata().GetName(), o.GetSpec().GetNodeName())
		}
		seen[o.GetMetadata().GetName()] = true
	}
	if !seen["p0"] || !seen["p7"] {
		t.Errorf("watch saw %v, want p0 and p7 (err %v)", seen, watch.Err())
	}

	// Dry run: checked, nothing written.
	a.create(t, pod("p9"))
	dry := connect.NewRequest(&skiffv1.BindBatchRequest{Bindings: []*skiffv1.BindRequest{{Name: "p9", NodeName: "node-1"}}})
	dry.Header().Set(kinds.DryRunHeader, "All")
	if res, err := a.pods.BindBatch(ctx, dry); err != nil || res.Msg.Results[0].GetCode() != "" {
		t.Errorf("dry run: %v, %v", res, err)
	}
	if p, _ := a.get(t, "p9"); p.GetSpec().GetNodeName() != "" {
		t.Errorf("a dry run bound p9 to %q", p.GetSpec().GetNodeName())
	}

	// Too many at once: refused whole, naming the limit.
	many := make([]*skiffv1.BindRequest, maxBindBatch+1)
	for i := range many {
		many[i] = &skiffv1.BindRequest{Name: fmt.Sprintf("p%d", i), NodeName: "node-1"}
	}
	_, err = a.pods.BindBatch(ctx, connect.NewRequest(&skiffv1.BindBatchRequest{Bindings: many}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "bindings: 1001 items, more than the 1000 one BindBatch may carry") {
		t.Errorf("oversized batch: %v", err)
	}
}

// racingStore writes over one pod just before the first Txn it passes on,
// as an agent or another scheduler might between BindBatch's read and write.
type racingStore struct {
	*store.Store
	key   string
	armed atomic.Bool // from the next Txn on: count, and race the first
	txns  atomic.Int32
}

func (s *racingStore) Txn(ctx context.Context, t store.Txn) (store.TxnResult, error) {
	if s.armed.Load() && s.txns.Add(1) == 1 {
		kv, err := s.Store.Get(ctx, s.key)
		if err != nil {
			return store.TxnResult{}, err
		}
		if _, err := s.Store.Txn(ctx, store.Txn{Ops: []store.Op{store.UpdateOp(s.key, kv.Value, kv.ModRevision)}}); err != nil {
			return store.TxnResult{}, err
		}
	}
	return s.Store.Txn(ctx, t)
}

// TestBindBatchRetriesAConflict: a pod written between BindBatch's read and
// its Txn is read again and bound in a second Txn with the others; no
// binding fails for it.
func TestBindBatchRetriesAConflict(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rs := &racingStore{Store: st, key: "/pods/default/b"}
	s := New(Config{Store: rs})
	if err := s.Init(ctx); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	pods := skiffv1connect.NewPodServiceClient(srv.Client(), srv.URL)
	var bs []*skiffv1.BindRequest
	for _, n := range []string{"a", "b", "c"} {
		if _, err := pods.Create(ctx, connect.NewRequest(pod(n))); err != nil {
			t.Fatal(err)
		}
		bs = append(bs, &skiffv1.BindRequest{Name: n, NodeName: "node-1"})
	}
	rs.armed.Store(true)
	res, err := pods.BindBatch(ctx, connect.NewRequest(&skiffv1.BindBatchRequest{Bindings: bs}))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res.Msg.Results {
		if r.GetCode() != "" || r.GetResourceVersion() != res.Msg.Results[0].GetResourceVersion() {
			t.Errorf("result %d = %v, want bound with the others", i, r)
		}
	}
	if n := rs.txns.Load(); n != 2 {
		t.Errorf("%d Txns, want 2: the batch, then the batch again with b read afresh", n)
	}
	for _, n := range []string{"a", "b", "c"} {
		p, err := pods.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: n}))
		if err != nil || p.Msg.Spec.NodeName != "node-1" {
			t.Errorf("pod %s: %v, %v", n, p, err)
		}
	}
}

// TestBindBatchAuthorization: a batch may span namespaces, so it is binding
// pods at the cluster scope: a namespace's admin may not, the server may.
func TestBindBatchAuthorization(t *testing.T) {
	e := newAuthEnv(t)
	ctx := context.Background()
	server := e.clients(t, cred{cert: "server:s1"})
	e.reset(t, server)
	teamAdmin := e.clients(t, cred{token: e.putToken(t, "adminteambbb", "team", RoleAdmin, time.Time{})})
	batch := &skiffv1.BindBatchRequest{Bindings: []*skiffv1.BindRequest{{Namespace: "team", Name: "p-free", NodeName: "n1"}}}
	_, err := teamAdmin.pods.BindBatch(ctx, connect.NewRequest(proto.Clone(batch).(*skiffv1.BindBatchRequest)))
	wantRefusal(t, "bind a batch with a namespace's token", err, connect.CodePermissionDenied, "cannot bind pods")
	res, err := server.pods.BindBatch(ctx, connect.NewRequest(batch))
	if err != nil || res.Msg.Results[0].GetCode() != "" {
		t.Fatalf("server binds a batch: %v, %v", res, err)
	}
	p, err := server.pods.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Namespace: "team", Name: "p-free"}))
	if err != nil || p.Msg.Spec.NodeName != "n1" {
		t.Errorf("p-free: %v, %v", p, err)
	}
}
