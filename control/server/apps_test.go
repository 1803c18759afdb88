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
	"google.golang.org/protobuf/types/known/timestamppb"

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

func (e *appsEnv) startDeployments() {
	e.start((&controllers.DeploymentController{Deployments: e.deployments, ReplicaSets: e.replicaSets, Pods: e.pods, Logger: e.log}).Run)
}

// startKubelet plays the nodes: every new pod is reported running and
// ready at once.
func (e *appsEnv) startKubelet(t *testing.T) {
	e.start(func(ctx context.Context) {
		w, err := e.pods.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{}))
		if err != nil {
			return
		}
		defer w.Close()
		for w.Receive() {
			ev := w.Msg()
			p := ev.GetObject()
			if ev.GetType() != skiffv1.EventType_EVENT_TYPE_ADDED || p.GetMetadata().GetDeletionTimestamp() != nil {
				continue
			}
			p.Status = &skiffv1.PodStatus{Phase: "Running", Conditions: []*skiffv1.Condition{{Type: "Ready", Status: "True", LastTransitionTime: timestamppb.Now()}}}
			p.Metadata.ResourceVersion = 0
			if _, err := e.pods.UpdateStatus(ctx, connect.NewRequest(p)); err != nil && ctx.Err() == nil && connect.CodeOf(err) != connect.CodeNotFound {
				t.Errorf("kubelet: report pod %s: %v", p.GetMetadata().GetName(), err)
			}
		}
	})
}

func (e *appsEnv) getDeploy(t *testing.T, name string) *skiffv1.Deployment {
	t.Helper()
	res, err := e.deployments.Get(context.Background(), connect.NewRequest(&skiffv1.GetRequest{Name: name}))
	if err != nil {
		t.Fatal(err)
	}
	return res.Msg
}

// editDeploy applies change to the newest version of the deployment.
func (e *appsEnv) editDeploy(t *testing.T, name string, change func(d *skiffv1.Deployment)) {
	t.Helper()
	for {
		d := e.getDeploy(t, name)
		change(d)
		_, err := e.deployments.Update(context.Background(), connect.NewRequest(d))
		if connect.CodeOf(err) == connect.CodeAborted {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return
	}
}

// rolledOut says whether the deployment's rollout is over, as rollout
// status judges it.
func rolledOut(d *skiffv1.Deployment) bool {
	s := d.GetStatus()
	n := d.GetSpec().GetReplicas()
	return s.GetObservedGeneration() >= d.GetMetadata().GetGeneration() && s.GetUpdatedReplicas() == n && s.GetReplicas() == n && s.GetAvailableReplicas() == n
}

func (e *appsEnv) waitRolledOut(t *testing.T, name string) *skiffv1.Deployment {
	t.Helper()
	var d *skiffv1.Deployment
	eventually(t, 20*time.Second, func() bool { d = e.getDeploy(t, name); return rolledOut(d) },
		func() string {
			return fmt.Sprintf("deployment %s: generation %d, status %v", name, d.GetMetadata().GetGeneration(), d.GetStatus())
		})
	return d
}

func (e *appsEnv) replicaSetsOf(t *testing.T, selector string) []*skiffv1.ReplicaSet {
	t.Helper()
	res, err := e.replicaSets.List(context.Background(), connect.NewRequest(&skiffv1.ListRequest{Namespace: "default", LabelSelector: selector}))
	if err != nil {
		t.Fatal(err)
	}
	return res.Msg.GetItems()
}

// TestDeploymentRollingUpdate: a template change rolls 10 pods over within
// maxSurge 3 and maxUnavailable 2, watched all along; undo brings the old
// template back as a new revision; the history is pruned to its limit.
func TestDeploymentRollingUpdate(t *testing.T) {
	e := newAppsEnv(t)
	e.startKubelet(t)
	e.startReplicaSets()
	e.startDeployments()
	ctx := testCtx(t)
	d := deploymentOf("web", 10)
	d.Spec.Strategy = &skiffv1.DeploymentStrategy{RollingUpdate: &skiffv1.RollingUpdateDeployment{MaxSurge: "3", MaxUnavailable: "2"}}
	d.Spec.RevisionHistoryLimit = proto.Int32(1)
	if _, err := e.deployments.Create(ctx, connect.NewRequest(d)); err != nil {
		t.Fatal(err)
	}
	first := e.waitRolledOut(t, "web")
	if first.GetMetadata().GetAnnotations()["deployment.kubernetes.io/revision"] != "1" {
		t.Errorf("revision of the first rollout: %v", first.GetMetadata().GetAnnotations())
	}
	rss := e.replicaSetsOf(t, "app=web")
	if len(rss) != 1 || !strings.HasPrefix(rss[0].GetMetadata().GetName(), "web-") || rss[0].GetMetadata().GetLabels()["pod-template-hash"] == "" {
		t.Fatalf("replicasets after the first rollout: %v", rss)
	}
	oldHash := rss[0].GetMetadata().GetLabels()["pod-template-hash"]
	checkAvail := e.watchAvailability(t, "app=web", 8, 13)

	e.editDeploy(t, "web", func(d *skiffv1.Deployment) {
		d.Spec.Template.Metadata.Annotations["version"] = "2"
	})
	second := e.waitRolledOut(t, "web")
	pods := e.waitPods(t, "app=web,pod-template-hash!="+oldHash, 10)
	if n := len(e.activePods(t, "app=web,pod-template-hash="+oldHash)); n != 0 {
		t.Errorf("%d pods of the old template left", n)
	}
	if pods[0].GetMetadata().GetAnnotations()["version"] != "2" {
		t.Errorf("new pods are not of the new template: %v", pods[0].GetMetadata())
	}
	if got := second.GetMetadata().GetAnnotations()["deployment.kubernetes.io/revision"]; got != "2" {
		t.Errorf("revision after the update: %q, want 2", got)
	}
	checkAvail()

	// Undo: the old template again, as revision 3, from the old ReplicaSet.
	checkAvail = e.watchAvailability(t, "app=web", 8, 13)
	e.editDeploy(t, "web", func(d *skiffv1.Deployment) {
		d.Spec.Template.Metadata.Annotations = map[string]string{"note": "from the template"}
	})
	third := e.waitRolledOut(t, "web")
	e.waitPods(t, "app=web,pod-template-hash="+oldHash, 10)
	if got := third.GetMetadata().GetAnnotations()["deployment.kubernetes.io/revision"]; got != "3" {
		t.Errorf("revision after undo: %q, want 3", got)
	}
	checkAvail()
	// History limit 1: the newest old ReplicaSet stays, with no pods.
	var names []string
	eventually(t, 10*time.Second, func() bool {
		names = nil
		for _, rs := range e.replicaSetsOf(t, "app=web") {
			names = append(names, fmt.Sprintf("%s=%d", rs.GetMetadata().GetLabels()["pod-template-hash"], rs.GetSpec().GetReplicas()))
		}
		return len(names) == 2
	}, func() string { return fmt.Sprintf("replicasets %v, want the current and one old", names) })
	conds := third.GetStatus().GetConditions()
	if len(conds) != 2 || conds[0].GetType() != "Available" || conds[0].GetStatus() != "True" ||
		conds[1].GetType() != "Progressing" || conds[1].GetReason() != "NewReplicaSetAvailable" {
		t.Errorf("conditions after the rollout: %v", conds)
	}
}

// watchAvailability watches the pods selector picks until the returned
// function is called, and then fails the test if ever fewer than min were
// ready (pods being deleted do not count) or more than max existed.
func (e *appsEnv) watchAvailability(t *testing.T, selector string, minReady, maxPods int) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // a test that stops early closes the watch too
	res, err := e.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{Namespace: "default", LabelSelector: selector}))
	if err != nil {
		t.Fatal(err)
	}
	pods := map[string]*skiffv1.Pod{}
	for _, p := range res.Msg.GetItems() {
		pods[p.GetMetadata().GetName()] = p
	}
	w, err := e.pods.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{Namespace: "default", LabelSelector: selector, ResourceVersion: res.Msg.GetResourceVersion()}))
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		worst  = len(pods)
		most   = len(pods)
		events int
		done   = make(chan struct{})
	)
	go func() {
		defer close(done)
		defer w.Close()
		for w.Receive() {
			ev := w.Msg()
			p := ev.GetObject()
			if ev.GetType() == skiffv1.EventType_EVENT_TYPE_DELETED {
				delete(pods, p.GetMetadata().GetName())
			} else {
				pods[p.GetMetadata().GetName()] = p
			}
			ready, all := 0, 0
			for _, p := range pods {
				if p.GetMetadata().GetDeletionTimestamp() != nil {
					continue
				}
				all++
				for _, c := range p.GetStatus().GetConditions() {
					if c.GetType() == "Ready" && c.GetStatus() == "True" {
						ready++
					}
				}
			}
			mu.Lock()
			worst, most = min(worst, ready), max(most, all)
			events++
			mu.Unlock()
		}
	}()
	return func() {
		t.Helper()
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		if worst < minReady {
			t.Errorf("during the rollout only %d pods were ready, want at least %d", worst, minReady)
		}
		if most > maxPods {
			t.Errorf("during the rollout %d pods existed, want at most %d", most, maxPods)
		}
		if events == 0 {
			t.Errorf("the watch saw no pod change during the rollout")
		}
		t.Logf("rollout: at least %d ready, at most %d pods, over %d pod events", worst, most, events)
	}
}

func deploymentOf(name string, replicas int32) *skiffv1.Deployment {
	rs := replicaSet(name, replicas)
	return &skiffv1.Deployment{
		Metadata: rs.Metadata,
		Spec:     &skiffv1.DeploymentSpec{Replicas: rs.Spec.Replicas, Selector: rs.Spec.Selector, Template: rs.Spec.Template},
	}
}

// TestDeploymentRecreate: with Recreate, the new template's pods start
// only once the old ones are gone.
func TestDeploymentRecreate(t *testing.T) {
	e := newAppsEnv(t)
	e.startKubelet(t)
	e.startReplicaSets()
	e.startDeployments()
	ctx := testCtx(t)
	d := deploymentOf("batch", 3)
	d.Spec.Strategy = &skiffv1.DeploymentStrategy{Type: "Recreate"}
	if _, err := e.deployments.Create(ctx, connect.NewRequest(d)); err != nil {
		t.Fatal(err)
	}
	e.waitRolledOut(t, "batch")
	oldHash := e.replicaSetsOf(t, "app=batch")[0].GetMetadata().GetLabels()["pod-template-hash"]
	// Watch for a new pod while an old one is still there.
	res, err := e.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{Namespace: "default", LabelSelector: "app=batch"}))
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	w, err := e.pods.Watch(wctx, connect.NewRequest(&skiffv1.WatchRequest{Namespace: "default", LabelSelector: "app=batch", ResourceVersion: res.Msg.GetResourceVersion()}))
	if err != nil {
		t.Fatal(err)
	}
	overlap := make(chan string, 1)
	go func() {
		defer w.Close()
		old := len(res.Msg.GetItems())
		for w.Receive() {
			p := w.Msg().GetObject()
			isOld := p.GetMetadata().GetLabels()["pod-template-hash"] == oldHash
			switch typ := w.Msg().GetType(); {
			case isOld && typ == skiffv1.EventType_EVENT_TYPE_DELETED:
				old--
			case !isOld && typ == skiffv1.EventType_EVENT_TYPE_ADDED && old > 0:
				select {
				case overlap <- fmt.Sprintf("new pod %s created while %d old ones exist", p.GetMetadata().GetName(), old):
				default:
				}
			}
		}
	}()
	e.editDeploy(t, "batch", func(d *skiffv1.Deployment) { d.Spec.Template.Metadata.Annotations = map[string]string{"v": "2"} })
	e.waitRolledOut(t, "batch")
	e.waitPods(t, "app=batch,pod-template-hash!="+oldHash, 3)
	cancel()
	select {
	case msg := <-overlap:
		t.Error(msg)
	default:
	}
}

// TestDeploymentPausedAndDeadline: a paused deployment scales but does not
// roll out; a rollout whose pods never become ready is reported as past
// its progress deadline.
func TestDeploymentPausedAndDeadline(t *testing.T) {
	e := newAppsEnv(t)
	e.startReplicaSets()
	e.startDeployments()
	ctx := testCtx(t)
	d := deploymentOf("stuck", 2)
	d.Spec.ProgressDeadlineSeconds = proto.Int32(1)
	if _, err := e.deployments.Create(ctx, connect.NewRequest(d)); err != nil {
		t.Fatal(err)
	}
	// No kubelet: the pods never become ready.
	var got *skiffv1.Deployment
	eventually(t, 10*time.Second, func() bool {
		got = e.getDeploy(t, "stuck")
		for _, c := range got.GetStatus().GetConditions() {
			if c.GetType() == "Progressing" && c.GetStatus() == "False" && c.GetReason() == "ProgressDeadlineExceeded" {
				return true
			}
		}
		return false
	}, func() string { return fmt.Sprintf("conditions %v", got.GetStatus().GetConditions()) })

	e.editDeploy(t, "stuck", func(d *skiffv1.Deployment) {
		d.Spec.Paused = true
		d.Spec.Template.Metadata.Annotations = map[string]string{"v": "2"}
		d.Spec.Replicas = proto.Int32(4)
	})
	e.waitPods(t, "app=stuck", 4)
	if rss := e.replicaSetsOf(t, "app=stuck"); len(rss) != 1 {
		t.Errorf("a paused deployment rolled out: %d replicasets", len(rss))
	}
	e.editDeploy(t, "stuck", func(d *skiffv1.Deployment) { d.Spec.Paused = false })
	eventually(t, 10*time.Second, func() bool { return len(e.replicaSetsOf(t, "app=stuck")) == 2 },
		func() string { return "no new replicaset after resuming" })
}

// TestDeploymentAdoptsOrphans: a deployment deleted and made again (its
// ReplicaSets left behind) takes its old ReplicaSet and pods back rather
// than starting new ones.
func TestDeploymentAdoptsOrphans(t *testing.T) {
	e := newAppsEnv(t)
	e.startKubelet(t)
	e.startReplicaSets()
	e.startDeployments()
	ctx := testCtx(t)
	if _, err := e.deployments.Create(ctx, connect.NewRequest(deploymentOf("again", 2))); err != nil {
		t.Fatal(err)
	}
	e.waitRolledOut(t, "again")
	before := podNames(e.waitPods(t, "app=again", 2))
	if _, err := e.deployments.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: "again"})); err != nil {
		t.Fatal(err)
	}
	res, err := e.deployments.Create(ctx, connect.NewRequest(deploymentOf("again", 2)))
	if err != nil {
		t.Fatal(err)
	}
	e.waitRolledOut(t, "again")
	var rss []*skiffv1.ReplicaSet
	eventually(t, 10*time.Second, func() bool {
		rss = e.replicaSetsOf(t, "app=again")
		return len(rss) == 1 && rss[0].GetMetadata().GetOwnerReferences()[0].GetUid() == res.Msg.GetMetadata().GetUid()
	}, func() string {
		return fmt.Sprintf("replicasets %v, want the old one, owned by the new deployment", rss)
	})
	if after := podNames(e.activePods(t, "app=again")); !slices.Equal(before, after) {
		t.Errorf("pods %v, want the same as before, %v", after, before)
	}
}

// TestReplicaSetAdoptsFormerPods: a ReplicaSet deleted and made again
// takes the pods of its earlier self back.
func TestReplicaSetAdoptsFormerPods(t *testing.T) {
	e := newAppsEnv(t)
	e.startReplicaSets()
	ctx := testCtx(t)
	if _, err := e.replicaSets.Create(ctx, connect.NewRequest(replicaSet("again", 2))); err != nil {
		t.Fatal(err)
	}
	before := podNames(e.waitPods(t, "app=again", 2))
	if _, err := e.replicaSets.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: "again"})); err != nil {
		t.Fatal(err)
	}
	res, err := e.replicaSets.Create(ctx, connect.NewRequest(replicaSet("again", 2)))
	if err != nil {
		t.Fatal(err)
	}
	var pods []*skiffv1.Pod
	eventually(t, 10*time.Second, func() bool {
		pods = e.activePods(t, "app=again")
		for _, p := range pods {
			if controllerRef(p).GetUid() != res.Msg.GetMetadata().GetUid() {
				return false
			}
		}
		return len(pods) == 2
	}, func() string {
		return fmt.Sprintf("pods %v, want the two, owned by the new ReplicaSet", podNames(pods))
	})
	if after := podNames(pods); !slices.Equal(before, after) {
		t.Errorf("pods %v, want the same as before, %v", after, before)
	}
}

func controllerRef(p *skiffv1.Pod) *skiffv1.OwnerReference {
	for _, r := range p.GetMetadata().GetOwnerReferences() {
		if r.GetController() {
			return r
		}
	}
	return nil
}

// TestDeploymentTwoCopies: two copies of both controllers, as during a
// leader change, still roll a deployment over, never below its
// availability.
func TestDeploymentTwoCopies(t *testing.T) {
	e := newAppsEnv(t)
	e.startKubelet(t)
	for range 2 {
		e.startReplicaSets()
		e.startDeployments()
	}
	ctx := testCtx(t)
	d := deploymentOf("twice", 10)
	d.Spec.Strategy = &skiffv1.DeploymentStrategy{RollingUpdate: &skiffv1.RollingUpdateDeployment{MaxSurge: "3", MaxUnavailable: "2"}}
	if _, err := e.deployments.Create(ctx, connect.NewRequest(d)); err != nil {
		t.Fatal(err)
	}
	e.waitRolledOut(t, "twice")
	e.waitPods(t, "app=twice", 10)
	// Availability holds; the surge may be passed by a pod or two while
	// both copies act on views a watch event apart (slot names keep
	// their creates from doubling).
	check := e.watchAvailability(t, "app=twice", 8, 13+3)
	e.editDeploy(t, "twice", func(d *skiffv1.Deployment) { d.Spec.Template.Metadata.Annotations["version"] = "2" })
	e.waitRolledOut(t, "twice")
	e.waitPods(t, "app=twice", 10)
	check()
	if n := len(e.replicaSetsOf(t, "app=twice")); n != 2 {
		t.Errorf("%d replicasets, want 2", n)
	}
}
