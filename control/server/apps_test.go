package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/apiserver"
	"skiff.dev/skiff/control/controllers"
	"skiff.dev/skiff/control/store"
)

// appsEnv is an API server over a real store with the apps controllers
// running against it, as the leader runs them; no scheduler or node, so
// the test plays their part on pods.
type appsEnv struct {
	pods        skiffv1connect.PodServiceClient
	replicaSets skiffv1connect.ReplicaSetServiceClient
	deployments skiffv1connect.DeploymentServiceClient
	log         *slog.Logger
	// start runs one more copy of a controller until the test ends.
	start func(run func(ctx context.Context))
}

func newAppsEnv(t *testing.T) *appsEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	api := apiserver.New(apiserver.Config{Store: st})
	if err := api.Init(ctx); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	e := &appsEnv{
		pods:        skiffv1connect.NewPodServiceClient(srv.Client(), srv.URL),
		replicaSets: skiffv1connect.NewReplicaSetServiceClient(srv.Client(), srv.URL),
		deployments: skiffv1connect.NewDeploymentServiceClient(srv.Client(), srv.URL),
		log:         slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	run, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	e.start = func(f func(ctx context.Context)) { wg.Go(func() { f(run) }) }
	t.Cleanup(func() { stop(); wg.Wait() }) // before the server closes (cleanups run last first)
	return e
}

func (e *appsEnv) startReplicaSets() {
	e.start((&controllers.ReplicaSetController{ReplicaSets: e.replicaSets, Pods: e.pods, Logger: e.log}).Run)
}

// activePods lists the pods of namespace default that select picks and
// that are not being deleted.
func (e *appsEnv) activePods(t *testing.T, selector string) []*skiffv1.Pod {
	t.Helper()
	res, err := e.pods.List(context.Background(), connect.NewRequest(&skiffv1.ListRequest{Namespace: "default", LabelSelector: selector}))
	if err != nil {
		t.Fatal(err)
	}
	var out []*skiffv1.Pod
	for _, p := range res.Msg.GetItems() {
		if p.GetMetadata().GetDeletionTimestamp() == nil {
			out = append(out, p)
		}
	}
	return out
}

func podNames(pods []*skiffv1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.GetMetadata().GetName())
	}
	slices.Sort(out)
	return out
}

// markReady reports p running and ready (or not), as its node would.
func (e *appsEnv) markReady(t *testing.T, p *skiffv1.Pod, ready bool) {
	t.Helper()
	s := "False"
	if ready {
		s = "True"
	}
	p = proto.Clone(p).(*skiffv1.Pod)
	p.Status = &skiffv1.PodStatus{Phase: "Running", Conditions: []*skiffv1.Condition{{Type: "Ready", Status: s}}}
	p.Metadata.ResourceVersion = 0
	if _, err := e.pods.UpdateStatus(context.Background(), connect.NewRequest(p)); err != nil {
		t.Fatal(err)
	}
}

func (e *appsEnv) getRS(t *testing.T, name string) *skiffv1.ReplicaSet {
	t.Helper()
	res, err := e.replicaSets.Get(context.Background(), connect.NewRequest(&skiffv1.GetRequest{Name: name}))
	if err != nil {
		t.Fatal(err)
	}
	return res.Msg
}

func (e *appsEnv) scaleRS(t *testing.T, name string, n int32) {
	t.Helper()
	for {
		rs := e.getRS(t, name)
		rs.Spec.Replicas = proto.Int32(n)
		_, err := e.replicaSets.Update(context.Background(), connect.NewRequest(rs))
		if connect.CodeOf(err) == connect.CodeAborted {
			continue // the controller reported status in between
		}
		if err != nil {
			t.Fatal(err)
		}
		return
	}
}

func replicaSet(name string, replicas int32) *skiffv1.ReplicaSet {
	labels := map[string]string{"app": name}
	return &skiffv1.ReplicaSet{
		Metadata: &skiffv1.ObjectMeta{Name: name},
		Spec: &skiffv1.ReplicaSetSpec{
			Replicas: proto.Int32(replicas),
			Selector: &skiffv1.LabelSelector{MatchLabels: labels},
			Template: &skiffv1.PodTemplateSpec{
				Metadata: &skiffv1.ObjectMeta{Labels: labels, Annotations: map[string]string{"note": "from the template"}},
				Spec:     &skiffv1.PodSpec{Containers: []*skiffv1.Container{{Name: "app", Image: "hello.wasm"}}},
			},
		},
	}
}

func (e *appsEnv) waitPods(t *testing.T, selector string, n int) []*skiffv1.Pod {
	t.Helper()
	var pods []*skiffv1.Pod
	eventually(t, 10*time.Second, func() bool { pods = e.activePods(t, selector); return len(pods) == n },
		func() string { return fmt.Sprintf("pods %s: %v, want %d", selector, podNames(pods), n) })
	return pods
}

// TestReplicaSetController: a ReplicaSet gets its pods, named and owned
// as Kubernetes' are, reports them in its status, scales down the least
// useful first, adopts an orphan it picks and releases a pod it no longer
// picks.
func TestReplicaSetController(t *testing.T) {
	e := newAppsEnv(t)
	e.startReplicaSets()
	ctx := testCtx(t)
	res, err := e.replicaSets.Create(ctx, connect.NewRequest(replicaSet("web", 3)))
	if err != nil {
		t.Fatal(err)
	}
	rs := res.Msg
	pods := e.waitPods(t, "app=web", 3)
	for _, p := range pods {
		m := p.GetMetadata()
		if !strings.HasPrefix(m.GetName(), "web-") || len(m.GetName()) != len("web-")+5 {
			t.Errorf("pod name %q, want web-<5 characters>", m.GetName())
		}
		refs := m.GetOwnerReferences()
		if len(refs) != 1 || refs[0].GetKind() != "ReplicaSet" || refs[0].GetApiVersion() != "apps/v1" || refs[0].GetName() != "web" ||
			refs[0].GetUid() != rs.GetMetadata().GetUid() || !refs[0].GetController() {
			t.Errorf("pod %s owner references: %v", m.GetName(), refs)
		}
		if m.GetAnnotations()["note"] != "from the template" || p.GetSpec().GetContainers()[0].GetImage() != "hello.wasm" {
			t.Errorf("pod %s is not of the template: %v", m.GetName(), p)
		}
	}
	// Two become ready: the status says so.
	e.markReady(t, pods[0], true)
	e.markReady(t, pods[1], true)
	e.markReady(t, pods[2], false)
	var got *skiffv1.ReplicaSetStatus
	eventually(t, 10*time.Second, func() bool {
		got = e.getRS(t, "web").GetStatus()
		return got.GetReplicas() == 3 && got.GetReadyReplicas() == 2 && got.GetAvailableReplicas() == 2 && got.GetFullyLabeledReplicas() == 3 && got.GetObservedGeneration() == 1
	}, func() string { return fmt.Sprintf("status %v", got) })

	// Down to 1: the pod not ready goes first, then the newer ready one.
	e.scaleRS(t, "web", 1)
	left := e.waitPods(t, "app=web", 1)
	if n := left[0].GetMetadata().GetName(); n != pods[0].GetMetadata().GetName() && n != pods[1].GetMetadata().GetName() {
		t.Errorf("scale down kept %s, which is not ready; want one of the ready ones", n)
	}
	eventually(t, 10*time.Second, func() bool {
		got = e.getRS(t, "web").GetStatus()
		return got.GetReplicas() == 1 && got.GetReadyReplicas() == 1 && got.GetObservedGeneration() == 2
	}, func() string { return fmt.Sprintf("status after scaling down %v", got) })

	// A pod that leaves the selector is released and replaced.
	p := proto.Clone(left[0]).(*skiffv1.Pod)
	p.Metadata.Labels = map[string]string{"app": "debug"}
	if _, err := e.pods.Update(ctx, connect.NewRequest(p)); err != nil {
		t.Fatal(err)
	}
	var released *skiffv1.Pod
	eventually(t, 10*time.Second, func() bool {
		r, err := e.pods.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: p.GetMetadata().GetName()}))
		released = r.Msg
		return err == nil && len(r.Msg.GetMetadata().GetOwnerReferences()) == 0
	}, func() string {
		return fmt.Sprintf("released pod's owners: %v", released.GetMetadata().GetOwnerReferences())
	})
	replacement := e.waitPods(t, "app=web", 1)[0]

	// An orphan that the selector picks is adopted: one pod too many, so
	// one goes (the orphan, which is not ready).
	orphan := &skiffv1.Pod{
		Metadata: &skiffv1.ObjectMeta{Name: "stray", Labels: map[string]string{"app": "web"}},
		Spec:     &skiffv1.PodSpec{Containers: []*skiffv1.Container{{Name: "app", Image: "hello.wasm"}}, NodeName: ""},
	}
	e.markReady(t, replacement, true)
	if _, err := e.pods.Create(ctx, connect.NewRequest(orphan)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() bool {
		pods = e.activePods(t, "app=web")
		return len(pods) == 1 && pods[0].GetMetadata().GetName() == replacement.GetMetadata().GetName()
	}, func() string { return fmt.Sprintf("pods after an orphan came: %v", podNames(pods)) })
}

// TestReplicaSetTwoCopies: two copies of the controller, as during a
// leader change, settle on the number of pods asked for.
func TestReplicaSetTwoCopies(t *testing.T) {
	e := newAppsEnv(t)
	e.startReplicaSets()
	e.startReplicaSets()
	ctx := testCtx(t)
	if _, err := e.replicaSets.Create(ctx, connect.NewRequest(replicaSet("pair", 5))); err != nil {
		t.Fatal(err)
	}
	e.waitPods(t, "app=pair", 5)
	e.scaleRS(t, "pair", 2)
	e.waitPods(t, "app=pair", 2)
}
