package controllers

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

// fakePods records the pods asked for; no watch ever shows them.
type fakePods struct {
	skiffv1connect.PodServiceClient
	mu      sync.Mutex
	created []string
	deleted []string
}

func (f *fakePods) Create(_ context.Context, r *connect.Request[skiffv1.Pod]) (*connect.Response[skiffv1.Pod], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created = append(f.created, r.Msg.GetMetadata().GetName())
	return connect.NewResponse(r.Msg), nil
}

func (f *fakePods) Delete(_ context.Context, r *connect.Request[skiffv1.DeleteRequest]) (*connect.Response[skiffv1.Pod], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleted = append(f.deleted, r.Msg.GetName())
	return connect.NewResponse(&skiffv1.Pod{}), nil
}

type fakeReplicaSets struct {
	skiffv1connect.ReplicaSetServiceClient
}

func (fakeReplicaSets) UpdateStatus(_ context.Context, r *connect.Request[skiffv1.ReplicaSet]) (*connect.Response[skiffv1.ReplicaSet], error) {
	return connect.NewResponse(r.Msg), nil
}

// TestReplicaSetExpectations: syncs that come before the watch shows the
// pods already asked for neither create nor delete them again; once it
// shows them they count as themselves; after expectationTTL the caches are
// trusted again.
func TestReplicaSetExpectations(t *testing.T) {
	pods := &fakePods{}
	now := t0
	c := &ReplicaSetController{ReplicaSets: fakeReplicaSets{}, Pods: pods, Now: func() time.Time { return now }}
	st := newRSState()
	rs := &skiffv1.ReplicaSet{
		Metadata: &skiffv1.ObjectMeta{Name: "web", Namespace: "default", Uid: "rs-uid", Generation: 1},
		Spec: &skiffv1.ReplicaSetSpec{
			Replicas: proto.Int32(3),
			Selector: &skiffv1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: &skiffv1.PodTemplateSpec{Metadata: &skiffv1.ObjectMeta{Labels: map[string]string{"app": "web"}}},
		},
	}
	st.sets["default/web"] = rs
	log := slog.New(slog.DiscardHandler)
	sync := func() {
		t.Helper()
		if _, err := c.sync(context.Background(), log, st, "default/web"); err != nil {
			t.Fatal(err)
		}
	}
	sync()
	sync() // the watch has shown nothing yet
	if len(pods.created) != 3 {
		t.Fatalf("created %v, want 3 pods however often it syncs before the watch catches up", pods.created)
	}
	// The watch shows two of them: still 3 in all.
	for _, name := range pods.created[:2] {
		p := newPod(rs, name)
		p.Metadata.CreationTimestamp = nil
		st.apply(change{kind: kindPods, typ: skiffv1.EventType_EVENT_TYPE_ADDED, obj: p})
	}
	sync()
	if len(pods.created) != 3 {
		t.Fatalf("created %v after the watch showed two, want still 3", pods.created)
	}
	// Scale to 1: the two seen go (the one in flight is the one kept); a
	// sync before the watch shows them going deletes no more.
	st.sets["default/web"].Spec.Replicas = proto.Int32(1)
	now = now.Add(time.Second)
	sync()
	sync()
	if len(pods.deleted) != 2 {
		t.Fatalf("deleted %v, want the two seen", pods.deleted)
	}
	// The watch shows them gone; the third never shows up: after the TTL
	// it is not counted, and one is created.
	for _, name := range pods.deleted {
		st.apply(change{kind: kindPods, typ: skiffv1.EventType_EVENT_TYPE_DELETED, obj: newPod(rs, name)})
	}
	sync()
	if len(pods.created) != 3 || len(pods.deleted) != 2 {
		t.Fatalf("before the TTL: created %v, deleted %v", pods.created, pods.deleted)
	}
	now = now.Add(expectationTTL)
	sync()
	if len(pods.created) != 4 || len(pods.deleted) != 2 {
		t.Fatalf("after the TTL: created %v, deleted %v; want one more created", pods.created, pods.deleted)
	}
}

// BenchmarkReplicaSetSync measures one steady sync of a ReplicaSet of 100
// pods in a namespace of 5,000 pods of 50 ReplicaSets: what each pod event
// costs the controller.
func BenchmarkReplicaSetSync(b *testing.B) {
	c := &ReplicaSetController{ReplicaSets: fakeReplicaSets{}, Pods: &fakePods{}, Now: func() time.Time { return t0 }}
	st := newRSState()
	for i := range 50 {
		name := "rs" + strconv.Itoa(i)
		labels := map[string]string{"app": name}
		rs := &skiffv1.ReplicaSet{
			Metadata: &skiffv1.ObjectMeta{Name: name, Namespace: "default", Uid: name + "-uid", Generation: 1},
			Spec: &skiffv1.ReplicaSetSpec{
				Replicas: proto.Int32(100), Selector: &skiffv1.LabelSelector{MatchLabels: labels},
				Template: &skiffv1.PodTemplateSpec{Metadata: &skiffv1.ObjectMeta{Labels: labels}},
			},
		}
		for slot := range 100 {
			p := newPod(rs, podName(rs, slot))
			p.Status = &skiffv1.PodStatus{Phase: "Running", Conditions: []*skiffv1.Condition{{Type: "Ready", Status: "True"}}}
			st.put(p)
		}
		rs.Status, _ = rsStatus(rs, slices.Collect(maps.Values(st.pods["default"])), t0) // a first sync settles it
		st.sets["default/"+name] = rs
	}
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	if _, err := c.sync(ctx, log, st, "default/rs7"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.sync(ctx, log, st, "default/rs7"); err != nil {
			b.Fatal(err)
		}
	}
}
