package apiserver

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/store"
)

type api struct {
	pods       skiffv1connect.PodServiceClient
	nodes      skiffv1connect.NodeServiceClient
	namespaces skiffv1connect.NamespaceServiceClient
}

// newAPI serves a real API server over a real single-server store.
func newAPI(t *testing.T) *api {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := New(Config{Store: st})
	if err := s.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Init(ctx); err != nil {
		t.Fatalf("second Init: %v", err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &api{
		pods:       skiffv1connect.NewPodServiceClient(srv.Client(), srv.URL),
		nodes:      skiffv1connect.NewNodeServiceClient(srv.Client(), srv.URL),
		namespaces: skiffv1connect.NewNamespaceServiceClient(srv.Client(), srv.URL),
	}
}

func pod(name string) *skiffv1.Pod {
	return &skiffv1.Pod{
		Metadata: &skiffv1.ObjectMeta{Name: name},
		Spec:     &skiffv1.PodSpec{Containers: []*skiffv1.Container{{Name: "c", Image: "hello"}}},
	}
}

func TestCreatePodDefaults(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	res, err := a.pods.Create(ctx, connect.NewRequest(&skiffv1.CreatePodRequest{Pod: pod("hello")}))
	if err != nil {
		t.Fatal(err)
	}
	p := res.Msg
	if p.Metadata.Namespace != "default" || p.Metadata.Uid == "" || p.Metadata.ResourceVersion == 0 || p.Metadata.CreationTimestamp == nil {
		t.Errorf("metadata not filled in: %v", p.Metadata)
	}
	if p.Spec.RestartPolicy != "Always" || p.Status.GetPhase() != "Pending" {
		t.Errorf("defaults: restartPolicy %q phase %q", p.Spec.RestartPolicy, p.Status.GetPhase())
	}
	got, err := a.pods.Get(ctx, connect.NewRequest(&skiffv1.GetPodRequest{Name: "hello"}))
	if err != nil {
		t.Fatal(err)
	}
	if got.Msg.Metadata.ResourceVersion != p.Metadata.ResourceVersion || got.Msg.Metadata.Uid != p.Metadata.Uid {
		t.Errorf("get returned %v, create returned %v", got.Msg.Metadata, p.Metadata)
	}
	_, err = a.pods.Create(ctx, connect.NewRequest(&skiffv1.CreatePodRequest{Pod: pod("hello")}))
	if connect.CodeOf(err) != connect.CodeAlreadyExists {
		t.Errorf("second create: %v, want AlreadyExists", err)
	}
}

func TestCreatePodInvalid(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	tests := []struct {
		name   string
		mutate func(*skiffv1.Pod)
		want   string
	}{
		{"bad name", func(p *skiffv1.Pod) { p.Metadata.Name = "Hello World" }, `metadata.name: invalid value "Hello World"`},
		{"no name", func(p *skiffv1.Pod) { p.Metadata.Name = "" }, "metadata.name: required value"},
		{"no containers", func(p *skiffv1.Pod) { p.Spec.Containers = nil }, "spec.containers: required value"},
		{"no image", func(p *skiffv1.Pod) { p.Spec.Containers[0].Image = "" }, "spec.containers[0].image: required value"},
		{"bad container name", func(p *skiffv1.Pod) { p.Spec.Containers[0].Name = "A_B" }, "spec.containers[0].name: invalid value"},
		{"duplicate container", func(p *skiffv1.Pod) { p.Spec.Containers = append(p.Spec.Containers, p.Spec.Containers[0]) }, `spec.containers[1].name: duplicate value "c"`},
		{"bad env name", func(p *skiffv1.Pod) { p.Spec.Containers[0].Env = []*skiffv1.EnvVar{{Name: "1 A"}} }, "spec.containers[0].env[0].name"},
		{"bad restart policy", func(p *skiffv1.Pod) { p.Spec.RestartPolicy = "Sometimes" }, `spec.restartPolicy: unsupported value "Sometimes"`},
		{"bad runtime class", func(p *skiffv1.Pod) { p.Spec.RuntimeClassName = "kata" }, `spec.runtimeClassName: unsupported value "kata"`},
		{"resourceVersion set", func(p *skiffv1.Pod) { p.Metadata.ResourceVersion = 7 }, "metadata.resourceVersion: must not be set on create"},
		{"bad label", func(p *skiffv1.Pod) { p.Metadata.Labels = map[string]string{"app": "a b"} }, "metadata.labels[app]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pod("ok")
			tt.mutate(p)
			_, err := a.pods.Create(ctx, connect.NewRequest(&skiffv1.CreatePodRequest{Pod: p}))
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("create: %v, want InvalidArgument with %q", err, tt.want)
			}
		})
	}
	list, err := a.pods.List(ctx, connect.NewRequest(&skiffv1.ListPodsRequest{}))
	if err != nil || len(list.Msg.Items) != 0 {
		t.Errorf("invalid creates left pods behind: %v %v", list.Msg.GetItems(), err)
	}
}

func TestCreateInMissingNamespace(t *testing.T) {
	a := newAPI(t)
	p := pod("x")
	p.Metadata.Namespace = "nowhere"
	_, err := a.pods.Create(context.Background(), connect.NewRequest(&skiffv1.CreatePodRequest{Pod: p}))
	if connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), `namespace "nowhere" not found`) {
		t.Errorf("create: %v, want namespace not found", err)
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	if _, err := a.pods.Create(ctx, connect.NewRequest(&skiffv1.CreatePodRequest{Pod: pod("dry"), DryRun: true})); err != nil {
		t.Fatal(err)
	}
	_, err := a.pods.Get(ctx, connect.NewRequest(&skiffv1.GetPodRequest{Name: "dry"}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("get after dry-run create: %v, want NotFound", err)
	}
}

func TestUpdateRules(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	res, err := a.pods.Create(ctx, connect.NewRequest(&skiffv1.CreatePodRequest{Pod: pod("p")}))
	if err != nil {
		t.Fatal(err)
	}
	created := res.Msg

	// Binding: nodeName may be set once.
	bound := clone(created)
	bound.Spec.NodeName = "node-1"
	res, err = a.pods.Update(ctx, connect.NewRequest(&skiffv1.UpdatePodRequest{Pod: bound}))
	if err != nil {
		t.Fatalf("bind: %v", err)
	}
	if res.Msg.Metadata.ResourceVersion <= created.Metadata.ResourceVersion {
		t.Errorf("resourceVersion did not grow: %d -> %d", created.Metadata.ResourceVersion, res.Msg.Metadata.ResourceVersion)
	}

	// The old version is stale now.
	stale := clone(created)
	stale.Status.Phase = "Running"
	_, err = a.pods.Update(ctx, connect.NewRequest(&skiffv1.UpdatePodRequest{Pod: stale}))
	if connect.CodeOf(err) != connect.CodeAborted || !strings.Contains(err.Error(), "modified") {
		t.Errorf("stale update: %v, want Aborted (conflict)", err)
	}

	rebind := clone(res.Msg)
	rebind.Spec.NodeName = "node-2"
	_, err = a.pods.Update(ctx, connect.NewRequest(&skiffv1.UpdatePodRequest{Pod: rebind}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "spec.nodeName: field is immutable") {
		t.Errorf("rebind: %v, want nodeName immutable", err)
	}
	changeImage := clone(res.Msg)
	changeImage.Spec.Containers[0].Image = "other"
	_, err = a.pods.Update(ctx, connect.NewRequest(&skiffv1.UpdatePodRequest{Pod: changeImage}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "pod updates may not change fields") {
		t.Errorf("image change: %v, want spec immutable", err)
	}

	// Status may change; uid and creation time stay.
	status := clone(res.Msg)
	status.Status.Phase = "Running"
	status.Metadata.CreationTimestamp = nil
	res, err = a.pods.Update(ctx, connect.NewRequest(&skiffv1.UpdatePodRequest{Pod: status}))
	if err != nil {
		t.Fatal(err)
	}
	if res.Msg.Status.Phase != "Running" || res.Msg.Metadata.Uid != created.Metadata.Uid || res.Msg.Metadata.CreationTimestamp == nil {
		t.Errorf("status update: %v", res.Msg)
	}

	// Delete with a stale version is refused; with the right one it works.
	_, err = a.pods.Delete(ctx, connect.NewRequest(&skiffv1.DeletePodRequest{Name: "p", ResourceVersion: created.Metadata.ResourceVersion}))
	if connect.CodeOf(err) != connect.CodeAborted {
		t.Errorf("stale delete: %v, want Aborted", err)
	}
	if _, err = a.pods.Delete(ctx, connect.NewRequest(&skiffv1.DeletePodRequest{Name: "p", ResourceVersion: res.Msg.Metadata.ResourceVersion})); err != nil {
		t.Errorf("delete: %v", err)
	}
}

// TestWatchByNode shows what an agent sees: a pod appears on its watch when
// bound to it, and a watch resumed from an old version misses nothing.
func TestWatchByNode(t *testing.T) {
	a := newAPI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := a.pods.List(ctx, connect.NewRequest(&skiffv1.ListPodsRequest{NodeName: "node-1"}))
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.pods.Create(ctx, connect.NewRequest(&skiffv1.CreatePodRequest{Pod: pod("p")}))
	if err != nil {
		t.Fatal(err)
	}
	other, err := a.pods.Create(ctx, connect.NewRequest(&skiffv1.CreatePodRequest{Pod: pod("elsewhere")}))
	if err != nil {
		t.Fatal(err)
	}
	o := clone(other.Msg)
	o.Spec.NodeName = "node-2"
	if _, err := a.pods.Update(ctx, connect.NewRequest(&skiffv1.UpdatePodRequest{Pod: o})); err != nil {
		t.Fatal(err)
	}
	b := clone(res.Msg)
	b.Spec.NodeName = "node-1"
	if _, err := a.pods.Update(ctx, connect.NewRequest(&skiffv1.UpdatePodRequest{Pod: b})); err != nil {
		t.Fatal(err)
	}
	if _, err := a.pods.Delete(ctx, connect.NewRequest(&skiffv1.DeletePodRequest{Name: "p"})); err != nil {
		t.Fatal(err)
	}
	st, err := a.pods.Watch(ctx, connect.NewRequest(&skiffv1.WatchPodsRequest{NodeName: "node-1", ResourceVersion: list.Msg.ResourceVersion}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var got []string
	for len(got) < 2 && st.Receive() {
		ev := st.Msg()
		got = append(got, ev.Type.String()+" "+ev.Object.Metadata.Name)
	}
	want := []string{"EVENT_TYPE_ADDED p", "EVENT_TYPE_DELETED p"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("events %q, want %q (err %v)", got, want, st.Err())
	}
}

func TestNamespaceDelete(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	if _, err := a.namespaces.Delete(ctx, connect.NewRequest(&skiffv1.DeleteNamespaceRequest{Name: "default"})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("delete default: %v, want FailedPrecondition", err)
	}
	if _, err := a.namespaces.Create(ctx, connect.NewRequest(&skiffv1.CreateNamespaceRequest{Namespace: &skiffv1.Namespace{Metadata: &skiffv1.ObjectMeta{Name: "team.a"}}})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("namespace with a dot: %v, want InvalidArgument", err)
	}
	if _, err := a.namespaces.Create(ctx, connect.NewRequest(&skiffv1.CreateNamespaceRequest{Namespace: &skiffv1.Namespace{Metadata: &skiffv1.ObjectMeta{Name: "team"}}})); err != nil {
		t.Fatal(err)
	}
	p := pod("p")
	p.Metadata.Namespace = "team"
	if _, err := a.pods.Create(ctx, connect.NewRequest(&skiffv1.CreatePodRequest{Pod: p})); err != nil {
		t.Fatal(err)
	}
	_, err := a.namespaces.Delete(ctx, connect.NewRequest(&skiffv1.DeleteNamespaceRequest{Name: "team"}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "still has 1 pod") {
		t.Errorf("delete non-empty namespace: %v", err)
	}
}

func clone(p *skiffv1.Pod) *skiffv1.Pod { return proto.Clone(p).(*skiffv1.Pod) }
