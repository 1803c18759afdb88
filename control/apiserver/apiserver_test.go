package apiserver

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
	"skiff.dev/skiff/control/store"
)

type api struct {
	pods       skiffv1connect.PodServiceClient
	nodes      skiffv1connect.NodeServiceClient
	namespaces skiffv1connect.NamespaceServiceClient
	events     skiffv1connect.EventServiceClient
	url        string
	hc         connect.HTTPClient
}

// realServer is the API server over a real single-server store, initialised
// twice (Init must be safe to repeat).
func realServer(t *testing.T) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := New(Config{Store: st})
	for i := 0; i < 2; i++ {
		if err := s.Init(ctx); err != nil {
			t.Fatalf("Init %d: %v", i+1, err)
		}
	}
	return s
}

// newAPI serves a real API server over a real single-server store.
func newAPI(t *testing.T) *api {
	t.Helper()
	s := realServer(t)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &api{
		pods:       skiffv1connect.NewPodServiceClient(srv.Client(), srv.URL),
		nodes:      skiffv1connect.NewNodeServiceClient(srv.Client(), srv.URL),
		namespaces: skiffv1connect.NewNamespaceServiceClient(srv.Client(), srv.URL),
		events:     skiffv1connect.NewEventServiceClient(srv.Client(), srv.URL),
		url:        srv.URL,
		hc:         srv.Client(),
	}
}

func pod(name string) *skiffv1.Pod {
	return &skiffv1.Pod{
		Metadata: &skiffv1.ObjectMeta{Name: name},
		Spec:     &skiffv1.PodSpec{Containers: []*skiffv1.Container{{Name: "c", Image: "hello"}}},
	}
}

func (a *api) create(t *testing.T, p *skiffv1.Pod) *skiffv1.Pod {
	t.Helper()
	res, err := a.pods.Create(context.Background(), connect.NewRequest(p))
	if err != nil {
		t.Fatal(err)
	}
	return res.Msg
}

func (a *api) get(t *testing.T, name string) (*skiffv1.Pod, error) {
	t.Helper()
	res, err := a.pods.Get(context.Background(), connect.NewRequest(&skiffv1.GetRequest{Name: name}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

func (a *api) addNode(t *testing.T, name string) {
	t.Helper()
	n := &skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: name}, Spec: &skiffv1.NodeSpec{}}
	if _, err := a.nodes.Create(context.Background(), connect.NewRequest(n)); err != nil {
		t.Fatal(err)
	}
}

func TestCreatePodDefaults(t *testing.T) {
	a := newAPI(t)
	p := a.create(t, pod("hello"))
	if p.Metadata.Namespace != "default" || p.Metadata.Uid == "" || p.Metadata.ResourceVersion == 0 || p.Metadata.CreationTimestamp == nil {
		t.Errorf("metadata not filled in: %v", p.Metadata)
	}
	if p.Spec.RestartPolicy != "Always" || p.Status.GetPhase() != "Pending" || p.Spec.GetTerminationGracePeriodSeconds() != 30 {
		t.Errorf("defaults: restartPolicy %q phase %q grace %d", p.Spec.RestartPolicy, p.Status.GetPhase(), p.Spec.GetTerminationGracePeriodSeconds())
	}
	got, err := a.get(t, "hello")
	if err != nil {
		t.Fatal(err)
	}
	if got.Metadata.ResourceVersion != p.Metadata.ResourceVersion || got.Metadata.Uid != p.Metadata.Uid {
		t.Errorf("get returned %v, create returned %v", got.Metadata, p.Metadata)
	}
	_, err = a.pods.Create(context.Background(), connect.NewRequest(pod("hello")))
	if connect.CodeOf(err) != connect.CodeAlreadyExists {
		t.Errorf("second create: %v, want AlreadyExists", err)
	}
	_, err = a.pods.Get(context.Background(), connect.NewRequest(&skiffv1.GetRequest{}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "name required") {
		t.Errorf("get without a name: %v, want InvalidArgument name required", err)
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
		{"name too long for the node's log directory", func(p *skiffv1.Pod) { p.Metadata.Name = strings.Repeat("a", 230) },
			`metadata.name: must be no more than 210 characters in namespace "default"`},
		{"no containers", func(p *skiffv1.Pod) { p.Spec.Containers = nil }, "spec.containers: required value"},
		{"no image", func(p *skiffv1.Pod) { p.Spec.Containers[0].Image = "" }, "spec.containers[0].image: required value"},
		{"bad container name", func(p *skiffv1.Pod) { p.Spec.Containers[0].Name = "A_B" }, "spec.containers[0].name: invalid value"},
		{"duplicate container", func(p *skiffv1.Pod) { p.Spec.Containers = append(p.Spec.Containers, p.Spec.Containers[0]) }, `spec.containers[1].name: duplicate value "c"`},
		{"bad env name", func(p *skiffv1.Pod) { p.Spec.Containers[0].Env = []*skiffv1.EnvVar{{Name: "1 A"}} }, "spec.containers[0].env[0].name"},
		{"bad restart policy", func(p *skiffv1.Pod) { p.Spec.RestartPolicy = "Sometimes" }, `spec.restartPolicy: unsupported value "Sometimes"`},
		{"bad runtime class", func(p *skiffv1.Pod) { p.Spec.RuntimeClassName = "kata" }, `spec.runtimeClassName: unsupported value "kata"`},
		{"negative grace period", func(p *skiffv1.Pod) { p.Spec.TerminationGracePeriodSeconds = proto.Int64(-1) }, "spec.terminationGracePeriodSeconds: invalid value -1: must not be negative"},
		{"resourceVersion set", func(p *skiffv1.Pod) { p.Metadata.ResourceVersion = 7 }, "metadata.resourceVersion: must not be set on create"},
		{"bad label value", func(p *skiffv1.Pod) { p.Metadata.Labels = map[string]string{"app": "a b"} }, "metadata.labels[app]"},
		{"64-character label name", func(p *skiffv1.Pod) { p.Metadata.Labels = map[string]string{strings.Repeat("k", 64): "v"} },
			"name part must be no more than 63 characters"},
		{"bad finalizer", func(p *skiffv1.Pod) { p.Metadata.Finalizers = []string{"not a name"} },
			`metadata.finalizers[0]: invalid value "not a name": a finalizer must be a qualified name`},
		{"bad status phase", func(p *skiffv1.Pod) { p.Status = &skiffv1.PodStatus{Phase: "Done"} }, ""}, // status is the server's on create
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pod("ok-" + strings.ReplaceAll(strings.ToLower(tt.name), " ", "-"))
			p.Metadata.Name = p.Metadata.Name[:min(len(p.Metadata.Name), 60)]
			p.Metadata.Name = strings.Trim(strings.NewReplacer("'", "").Replace(p.Metadata.Name), "-")
			tt.mutate(p)
			_, err := a.pods.Create(ctx, connect.NewRequest(p))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("create: %v", err)
				}
				return
			}
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("create: %v, want InvalidArgument with %q", err, tt.want)
			}
		})
	}
	list, err := a.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
	if err != nil || len(list.Msg.Items) != 1 {
		t.Errorf("invalid creates left pods behind: %v %v", list.Msg.GetItems(), err)
	}
}

func TestCreateInMissingNamespace(t *testing.T) {
	a := newAPI(t)
	p := pod("x")
	p.Metadata.Namespace = "nowhere"
	_, err := a.pods.Create(context.Background(), connect.NewRequest(p))
	if connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), `namespace "nowhere" not found`) {
		t.Errorf("create: %v, want namespace not found", err)
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	req := connect.NewRequest(pod("dry"))
	req.Header().Set(kinds.DryRunHeader, "All")
	if _, err := a.pods.Create(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, err := a.get(t, "dry"); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("get after dry-run create: %v, want NotFound", err)
	}
}

// TestSubresources shows that Update changes neither status nor binding,
// that Bind binds once and UpdateStatus changes the status alone, each a
// compare-and-swap.
func TestSubresources(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	created := a.create(t, pod("p"))

	// Update: a status change is ignored (the status has its own call) ...
	up := clone(created)
	up.Status.Phase = "Succeeded"
	up.Metadata.Labels = map[string]string{"app": "web"}
	res, err := a.pods.Update(ctx, connect.NewRequest(up))
	if err != nil {
		t.Fatal(err)
	}
	if res.Msg.Status.Phase != "Pending" || res.Msg.Metadata.Labels["app"] != "web" {
		t.Errorf("update: phase %q labels %v, want Pending (unchanged) and app=web", res.Msg.Status.Phase, res.Msg.Metadata.Labels)
	}
	// ... and a binding is refused.
	bind := clone(res.Msg)
	bind.Spec.NodeName = "node-1"
	_, err = a.pods.Update(ctx, connect.NewRequest(bind))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "spec.nodeName: may not be set by an update: bind the pod through PodService.Bind") {
		t.Errorf("bind through update: %v", err)
	}
	changeImage := clone(res.Msg)
	changeImage.Spec.Containers[0].Image = "other"
	_, err = a.pods.Update(ctx, connect.NewRequest(changeImage))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "pod updates may not change the spec") {
		t.Errorf("image change: %v, want spec immutable", err)
	}
	// The first version is stale now.
	_, err = a.pods.Update(ctx, connect.NewRequest(clone(created)))
	if connect.CodeOf(err) != connect.CodeAborted || !strings.Contains(err.Error(), "get it and try again") {
		t.Errorf("stale update: %v, want Aborted (conflict)", err)
	}

	// Bind: once, with the PodScheduled condition.
	b, err := a.pods.Bind(ctx, connect.NewRequest(&skiffv1.BindRequest{Name: "p", NodeName: "node-1", Uid: created.Metadata.Uid}))
	if err != nil {
		t.Fatal(err)
	}
	if b.Msg.Spec.NodeName != "node-1" || len(b.Msg.Status.Conditions) != 1 || b.Msg.Status.Conditions[0].Type != "PodScheduled" || b.Msg.Status.Conditions[0].Status != "True" {
		t.Errorf("bound pod: node %q conditions %v", b.Msg.Spec.NodeName, b.Msg.Status.Conditions)
	}
	_, err = a.pods.Bind(ctx, connect.NewRequest(&skiffv1.BindRequest{Name: "p", NodeName: "node-2"}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), `already bound to node "node-1"`) {
		t.Errorf("second bind: %v", err)
	}
	_, err = a.pods.Bind(ctx, connect.NewRequest(&skiffv1.BindRequest{Name: "p", NodeName: "Bad_Node"}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), `nodeName: invalid value "Bad_Node"`) {
		t.Errorf("bind to a bad name: %v", err)
	}

	// UpdateStatus: status alone; a stale version is a conflict.
	st := clone(b.Msg)
	st.Status.Phase = "Running"
	st.Spec.Containers[0].Image = "ignored"
	st.Metadata.Labels = map[string]string{"ignored": "yes"}
	s, err := a.pods.UpdateStatus(ctx, connect.NewRequest(st))
	if err != nil {
		t.Fatal(err)
	}
	if s.Msg.Status.Phase != "Running" || s.Msg.Spec.Containers[0].Image != "hello" || s.Msg.Metadata.Labels["app"] != "web" || s.Msg.Spec.NodeName != "node-1" {
		t.Errorf("after UpdateStatus: %v", s.Msg)
	}
	_, err = a.pods.UpdateStatus(ctx, connect.NewRequest(st))
	if connect.CodeOf(err) != connect.CodeAborted {
		t.Errorf("stale UpdateStatus: %v, want Aborted", err)
	}
	bad := clone(s.Msg)
	bad.Status.Phase = "Done"
	_, err = a.pods.UpdateStatus(ctx, connect.NewRequest(bad))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), `status.phase: unsupported value "Done"`) {
		t.Errorf("bad phase: %v", err)
	}
}

// TestBindAndStatusConcurrently is the scheduler and an agent writing the
// same pods at once: the scheduler binds, the agent reports a status (a
// get, then a compare-and-swap UpdateStatus retried on conflict, as the
// agent does). Neither write may be lost.
func TestBindAndStatusConcurrently(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	const n = 40
	for i := 0; i < n; i++ {
		a.create(t, pod(fmt.Sprintf("p%d", i)))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("p%d", i)
		wg.Go(func() {
			if _, err := a.pods.Bind(ctx, connect.NewRequest(&skiffv1.BindRequest{Name: name, NodeName: "node-1"})); err != nil {
				errs <- fmt.Errorf("bind %s: %w", name, err)
			}
		})
		wg.Go(func() {
			for try := 0; ; try++ {
				p, err := a.get(t, name)
				if err != nil {
					errs <- err
					return
				}
				p.Status.Phase = "Running"
				p.Status.Conditions = append(p.Status.Conditions, &skiffv1.Condition{Type: "Ready", Status: "True"})
				_, err = a.pods.UpdateStatus(ctx, connect.NewRequest(p))
				if connect.CodeOf(err) == connect.CodeAborted && try < 50 {
					continue
				}
				if err != nil {
					errs <- fmt.Errorf("status %s: %w", name, err)
				}
				return
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := 0; i < n; i++ {
		p, err := a.get(t, fmt.Sprintf("p%d", i))
		if err != nil {
			t.Fatal(err)
		}
		types := map[string]string{}
		for _, c := range p.Status.Conditions {
			types[c.Type] = c.Status
		}
		if p.Spec.NodeName != "node-1" || p.Status.Phase != "Running" || types["PodScheduled"] != "True" || types["Ready"] != "True" {
			t.Errorf("%s lost a write: node %q phase %q conditions %v", p.Metadata.Name, p.Spec.NodeName, p.Status.Phase, types)
		}
	}
}

// TestWatchByNode shows what an agent sees: a pod appears on its watch when
// bound to it, and a watch resumed from an old version misses nothing.
func TestWatchByNode(t *testing.T) {
	a := newAPI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	onNode := "spec.nodeName=node-1"
	list, err := a.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{FieldSelector: onNode}))
	if err != nil {
		t.Fatal(err)
	}
	a.create(t, pod("p"))
	a.create(t, pod("elsewhere"))
	for name, node := range map[string]string{"elsewhere": "node-2", "p": "node-1"} {
		if _, err := a.pods.Bind(ctx, connect.NewRequest(&skiffv1.BindRequest{Name: name, NodeName: node})); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.pods.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: "p"})); err != nil {
		t.Fatal(err)
	}
	st, err := a.pods.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{FieldSelector: onNode, ResourceVersion: list.Msg.ResourceVersion}))
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
	_, err = a.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{FieldSelector: "spec.host=x"}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), `field "spec.host" is not supported`) {
		t.Errorf("unknown field: %v", err)
	}
}

func TestLabelSelectors(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	for name, labels := range map[string]map[string]string{
		"web-1": {"app": "web", "tier": "front"},
		"web-2": {"app": "web", "tier": "back", "canary": ""},
		"db":    {"app": "db"},
		"bare":  nil,
	} {
		p := pod(name)
		p.Metadata.Labels = labels
		a.create(t, p)
	}
	tests := []struct {
		selector string
		want     string
	}{
		{"app=web", "web-1,web-2"},
		{"app!=web", "bare,db"},
		{"tier in (front,side)", "web-1"},
		{"tier notin (front)", "bare,db,web-2"},
		{"canary", "web-2"},
		{"!canary", "bare,db,web-1"},
		{"app=web,tier=back", "web-2"},
		{"", "bare,db,web-1,web-2"},
	}
	for _, tt := range tests {
		res, err := a.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{LabelSelector: tt.selector}))
		if err != nil {
			t.Errorf("-l %q: %v", tt.selector, err)
			continue
		}
		var names []string
		for _, p := range res.Msg.Items {
			names = append(names, p.Metadata.Name)
		}
		if got := strings.Join(names, ","); got != tt.want {
			t.Errorf("-l %q: %s, want %s", tt.selector, got, tt.want)
		}
	}
	_, err := a.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{LabelSelector: "a in (b"}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), `invalid label selector "a in (b"`) {
		t.Errorf("malformed selector: %v", err)
	}

	// A watch with a selector sees an object leave it as DELETED.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	from, err := a.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	st, err := a.pods.Watch(wctx, connect.NewRequest(&skiffv1.WatchRequest{LabelSelector: "app=web", ResourceVersion: from.Msg.ResourceVersion}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	p, _ := a.get(t, "web-1")
	p.Metadata.Labels["app"] = "api"
	if _, err := a.pods.Update(ctx, connect.NewRequest(p)); err != nil {
		t.Fatal(err)
	}
	if !st.Receive() || st.Msg().Type != skiffv1.EventType_EVENT_TYPE_DELETED || st.Msg().Object.Metadata.Name != "web-1" {
		t.Errorf("watch -l app=web after relabelling web-1: %v %v", st.Msg(), st.Err())
	}
}

// TestGracefulDelete walks a pod through Kubernetes' deletion: marked
// while its node stops it, gone once the node confirms; at once when it
// was never bound or its node is gone; held by a finalizer.
func TestGracefulDelete(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	del := func(name string, grace *int64, uid string) (*skiffv1.Pod, error) {
		res, err := a.pods.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: name, GracePeriodSeconds: grace, Uid: uid}))
		if err != nil {
			return nil, err
		}
		return res.Msg, nil
	}
	a.addNode(t, "node-1")
	bound := func(name string) *skiffv1.Pod {
		p := a.create(t, pod(name))
		if _, err := a.pods.Bind(ctx, connect.NewRequest(&skiffv1.BindRequest{Name: name, NodeName: "node-1"})); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// Never bound: gone at once.
	a.create(t, pod("unbound"))
	if _, err := del("unbound", nil, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := a.get(t, "unbound"); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("unbound pod after delete: %v, want NotFound", err)
	}

	// Bound: marked with the pod's grace period until the node confirms.
	p := bound("running")
	marked, err := del("running", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if marked.Metadata.DeletionTimestamp == nil || marked.Metadata.GetDeletionGracePeriodSeconds() != 30 {
		t.Fatalf("bound pod after delete: deletionTimestamp %v grace %v, want marked with 30", marked.Metadata.DeletionTimestamp, marked.Metadata.DeletionGracePeriodSeconds)
	}
	if d := time.Until(marked.Metadata.DeletionTimestamp.AsTime()); d < 25*time.Second || d > 31*time.Second {
		t.Errorf("deletionTimestamp is %s from now, want about 30s (when the grace ends)", d)
	}
	// A shorter grace shortens it; a longer one does not lengthen it.
	if m, _ := del("running", proto.Int64(5), ""); m.Metadata.GetDeletionGracePeriodSeconds() != 5 {
		t.Errorf("grace after a shorter delete: %d, want 5", m.Metadata.GetDeletionGracePeriodSeconds())
	}
	if m, _ := del("running", proto.Int64(60), ""); m.Metadata.GetDeletionGracePeriodSeconds() != 5 {
		t.Errorf("grace after a longer delete: %d, want 5", m.Metadata.GetDeletionGracePeriodSeconds())
	}
	// Nothing binds a pod that is being deleted, and updates cannot clear the mark.
	up, _ := a.get(t, "running")
	up.Metadata.DeletionTimestamp = nil
	if res, err := a.pods.Update(ctx, connect.NewRequest(up)); err != nil || res.Msg.Metadata.DeletionTimestamp == nil {
		t.Errorf("update of a terminating pod cleared its deletionTimestamp (err %v)", err)
	}
	// The node confirms, naming the pod's uid.
	if _, err := del("running", proto.Int64(0), "some-other-uid"); connect.CodeOf(err) != connect.CodeAborted {
		t.Errorf("confirm with another uid: %v, want Aborted", err)
	}
	if _, err := del("running", proto.Int64(0), p.Metadata.Uid); err != nil {
		t.Fatal(err)
	}
	if _, err := a.get(t, "running"); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("pod after confirmation: %v, want NotFound", err)
	}

	// Its node is gone: nothing will confirm, so it goes at once.
	bound("orphan")
	if _, err := a.nodes.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: "node-1"})); err != nil {
		t.Fatal(err)
	}
	if _, err := del("orphan", nil, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := a.get(t, "orphan"); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("pod of a gone node after delete: %v, want NotFound", err)
	}

	// A finalizer holds the object until it is removed.
	f := pod("held")
	f.Metadata.Finalizers = []string{"example.com/cleanup"}
	a.create(t, f)
	if m, err := del("held", nil, ""); err != nil || m.Metadata.DeletionTimestamp == nil {
		t.Fatalf("delete held: %v %v", err, m)
	}
	held, _ := a.get(t, "held")
	held.Metadata.Finalizers = append(held.Metadata.Finalizers, "example.com/more")
	if _, err := a.pods.Update(ctx, connect.NewRequest(held)); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "no new finalizers") {
		t.Errorf("adding a finalizer while deleting: %v", err)
	}
	held.Metadata.Finalizers = nil
	if _, err := a.pods.Update(ctx, connect.NewRequest(held)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.get(t, "held"); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("held pod after its finalizer went: %v, want NotFound", err)
	}

	if _, err := del("whatever", proto.Int64(-1), ""); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "gracePeriodSeconds: invalid value -1: must not be negative") {
		t.Errorf("negative grace: %v", err)
	}
}

func TestNodeValidation(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	tests := []struct {
		name   string
		status *skiffv1.NodeStatus
		want   string
	}{
		{"bad quantity", &skiffv1.NodeStatus{Capacity: map[string]string{"memory": "lots"}}, `status.capacity[memory]: invalid value "lots"`},
		{"unknown resource", &skiffv1.NodeStatus{Capacity: map[string]string{"gpu": "1"}}, "status.capacity[gpu]: unsupported resource"},
		{"unknown runtime", &skiffv1.NodeStatus{Runtimes: []string{"kata"}}, `status.runtimes[0]: unsupported value "kata"`},
		{"bad condition", &skiffv1.NodeStatus{Conditions: []*skiffv1.Condition{{Type: "Ready", Status: "Yes"}}}, `status.conditions[0].status: unsupported value "Yes"`},
		{"bad endpoint", &skiffv1.NodeStatus{AgentEndpoint: "example.com/logs"}, `status.agentEndpoint: invalid value "example.com/logs"`},
	}
	a.addNode(t, "n")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.nodes.UpdateStatus(ctx, connect.NewRequest(&skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: "n"}, Status: tt.status}))
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("UpdateStatus: %v, want InvalidArgument with %q", err, tt.want)
			}
		})
	}
	good := &skiffv1.NodeStatus{Capacity: map[string]string{"cpu": "2", "memory": "24Gi", "pods": "110"}, Runtimes: []string{"wasm"}, AgentEndpoint: "127.0.0.1:4000",
		Conditions: []*skiffv1.Condition{{Type: "Ready", Status: "True", LastHeartbeatTime: timestamppb.Now()}}}
	res, err := a.nodes.UpdateStatus(ctx, connect.NewRequest(&skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: "n"}, Status: good}))
	if err != nil || res.Msg.Status.AgentEndpoint != "127.0.0.1:4000" {
		t.Errorf("good status: %v %v", err, res)
	}
}

// TestEventKind shows that a kind added through the registry (its .proto,
// one Register call and its validation) gets every verb: Event needed
// nothing else in the apiserver.
func TestEventKind(t *testing.T) {
	a := newAPI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := kinds.Event.Client(a.hc, a.url)
	_, rev, err := c.List(ctx, &skiffv1.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Watch(ctx, &skiffv1.WatchRequest{Namespace: "default", ResourceVersion: rev})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e := &skiffv1.Event{
		Metadata:       &skiffv1.ObjectMeta{Name: "p.1"},
		InvolvedObject: &skiffv1.ObjectReference{Kind: "Pod", Name: "p", Namespace: "default"},
		Reason:         "Started", Message: "Started container c", Type: "Normal", Count: 1,
		Source: &skiffv1.EventSource{Component: "agent", Host: "node-1"},
	}
	created, err := c.Create(ctx, e, false)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(ctx, "default", "p.1")
	if err != nil || got.(*skiffv1.Event).Reason != "Started" {
		t.Fatalf("get: %v %v", got, err)
	}
	upd := proto.Clone(created).(*skiffv1.Event)
	upd.Count = 2
	if _, err := c.Update(ctx, upd, false); err != nil {
		t.Fatal(err)
	}
	items, _, err := c.List(ctx, &skiffv1.ListRequest{FieldSelector: "involvedObject.name=p,reason=Started"})
	if err != nil || len(items) != 1 || items[0].(*skiffv1.Event).Count != 2 {
		t.Fatalf("list: %v %v", items, err)
	}
	if _, err := c.Delete(ctx, &skiffv1.DeleteRequest{Namespace: "default", Name: "p.1"}); err != nil {
		t.Fatal(err)
	}
	var seen []string
	for len(seen) < 3 && st.Receive() {
		typ, o := st.Event()
		seen = append(seen, fmt.Sprintf("%s %d", typ, o.(*skiffv1.Event).Count))
	}
	if want := "EVENT_TYPE_ADDED 1,EVENT_TYPE_MODIFIED 2,EVENT_TYPE_DELETED 2"; strings.Join(seen, ",") != want {
		t.Errorf("watch saw %v, want %s", seen, want)
	}
	bad := proto.Clone(e).(*skiffv1.Event)
	bad.Type, bad.Reason = "Fatal", "not camel"
	_, err = c.Create(ctx, bad, false)
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), `type: unsupported value "Fatal"`) || !strings.Contains(err.Error(), `reason: invalid value "not camel"`) {
		t.Errorf("bad event: %v", err)
	}
}

func clone(p *skiffv1.Pod) *skiffv1.Pod { return proto.Clone(p).(*skiffv1.Pod) }
