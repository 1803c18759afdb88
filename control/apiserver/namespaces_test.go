package apiserver

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

func TestNamespaceDelete(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	if _, err := a.namespaces.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: "default"})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("delete default: %v, want FailedPrecondition", err)
	}
	if _, err := a.namespaces.Create(ctx, connect.NewRequest(&skiffv1.Namespace{Metadata: &skiffv1.ObjectMeta{Name: "team.a"}})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("namespace with a dot: %v, want InvalidArgument", err)
	}
	for _, name := range []string{"team", "held"} {
		ns := &skiffv1.Namespace{Metadata: &skiffv1.ObjectMeta{Name: name}}
		if name == "held" {
			ns.Metadata.Finalizers = []string{"example.com/keep"}
		}
		if _, err := a.namespaces.Create(ctx, connect.NewRequest(ns)); err != nil {
			t.Fatal(err)
		}
		p := pod("p")
		p.Metadata.Namespace = name
		a.create(t, p)
	}
	del := func(name string, dryRun bool) error {
		req := connect.NewRequest(&skiffv1.DeleteRequest{Name: name})
		if dryRun {
			req.Header().Set(kinds.DryRunHeader, "All")
		}
		_, err := a.namespaces.Delete(ctx, req)
		return err
	}
	getNS := func(name string) *skiffv1.Namespace {
		t.Helper()
		res, err := a.namespaces.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: name}))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg
	}
	// A dry run marks nothing; a deletion marks the namespace Terminating
	// with the finalizer the namespace controller removes once it has
	// emptied it, however many pods it holds.
	if err := del("team", true); err != nil {
		t.Errorf("dry-run delete of a namespace with a pod: %v", err)
	}
	if ns := getNS("team"); ns.GetMetadata().GetDeletionTimestamp() != nil {
		t.Errorf("a dry run marked the namespace: %v", ns.GetMetadata())
	}
	for _, name := range []string{"team", "held"} {
		if err := del(name, false); err != nil {
			t.Fatalf("delete namespace %s with a pod: %v", name, err)
		}
		ns := getNS(name)
		if ns.GetMetadata().GetDeletionTimestamp() == nil || ns.GetStatus().GetPhase() != "Terminating" || !slices.Contains(ns.GetMetadata().GetFinalizers(), NamespaceFinalizer) {
			t.Errorf("namespace %s after delete: %v, phase %q; want marked Terminating with finalizer %q", name, ns.GetMetadata(), ns.GetStatus().GetPhase(), NamespaceFinalizer)
		}
	}
	if !slices.Contains(getNS("held").GetMetadata().GetFinalizers(), "example.com/keep") {
		t.Errorf("a namespace's own finalizer went with its deletion")
	}
	// No new content in a namespace being deleted; events, which tell of
	// the deletion, are still let in.
	p := pod("late")
	p.Metadata.Namespace = "team"
	for _, req := range []*connect.Request[skiffv1.Pod]{connect.NewRequest(p), dryRun(p)} {
		const want = `pods "late" is forbidden: unable to create new content in namespace team because it is being terminated`
		if _, err := a.pods.Create(ctx, req); connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), want) {
			t.Errorf("create in the namespace being deleted (dry run %q): %v, want PermissionDenied %q", req.Header().Get(kinds.DryRunHeader), err, want)
		}
	}
	ev := &skiffv1.Event{Metadata: &skiffv1.ObjectMeta{Name: "p.1", Namespace: "team"}, InvolvedObject: &skiffv1.ObjectReference{Kind: "Pod", Name: "p", Namespace: "team"}, Reason: "Killing", Type: "Normal", Source: &skiffv1.EventSource{Component: "agent"}}
	if _, err := a.events.Create(ctx, connect.NewRequest(ev)); err != nil {
		t.Errorf("event in the namespace being deleted: %v", err)
	}

	// The final removal (the controller's update that drops the last
	// finalizer) still refuses while a pod is left.
	ns := getNS("team")
	ns.Metadata.Finalizers = nil
	const nonEmpty = `namespace "team" still has pod(s)`
	if _, err := a.namespaces.Update(ctx, connect.NewRequest(ns)); connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), nonEmpty) {
		t.Errorf("removing the finalizer of a namespace with a pod: %v, want FailedPrecondition %q", err, nonEmpty)
	}
	if _, err := a.pods.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Namespace: "team", Name: "p"})); err != nil {
		t.Fatal(err)
	}
	if _, err := a.events.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Namespace: "team", Name: "p.1"})); err != nil {
		t.Fatal(err)
	}
	ns = getNS("team")
	ns.Metadata.Finalizers = nil
	if _, err := a.namespaces.Update(ctx, connect.NewRequest(ns)); err != nil {
		t.Errorf("removing the finalizer of the emptied namespace: %v", err)
	}
	for _, req := range []*connect.Request[skiffv1.Pod]{connect.NewRequest(p), dryRun(p)} {
		if _, err := a.pods.Create(ctx, req); connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), `namespace "team" not found`) {
			t.Errorf("create in the deleted namespace (dry run %q): %v, want NotFound", req.Header().Get(kinds.DryRunHeader), err)
		}
	}
}

// TestPodNamespaceRace races creating a pod in a namespace against deleting
// that namespace, 200 times. Each round ends one of two ways: the pod is
// created before the namespace is marked for deletion, or the create is
// refused because the namespace is being terminated. Then the namespaces
// are emptied as the namespace controller would, and none can go while a
// pod is left in it.
func TestPodNamespaceRace(t *testing.T) {
	a := newAPI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const rounds = 200
	outcomes := map[string]int{}
	created := map[string]bool{}
	for i := range rounds {
		name := fmt.Sprintf("ns%d", i)
		if _, err := a.namespaces.Create(ctx, connect.NewRequest(&skiffv1.Namespace{Metadata: &skiffv1.ObjectMeta{Name: name}})); err != nil {
			t.Fatal(err)
		}
		p := pod("p")
		p.Metadata.Namespace = name
		var createErr, deleteErr error
		var wg sync.WaitGroup
		start := make(chan struct{})
		wg.Go(func() {
			<-start
			_, createErr = a.pods.Create(ctx, connect.NewRequest(p))
		})
		wg.Go(func() {
			<-start
			_, deleteErr = a.namespaces.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: name}))
		})
		close(start)
		wg.Wait()
		switch {
		case deleteErr != nil:
			t.Fatalf("round %d: delete namespace: %v", i, deleteErr)
		case createErr == nil:
			outcomes["pod created, then namespace marked"]++
			created[name] = true
		case connect.CodeOf(createErr) == connect.CodePermissionDenied &&
			strings.Contains(createErr.Error(), fmt.Sprintf("unable to create new content in namespace %s because it is being terminated", name)):
			outcomes["namespace marked, pod refused"]++
		default:
			t.Fatalf("round %d: create pod: %v", i, createErr)
		}
	}
	t.Logf("outcomes of %d rounds: %v", rounds, outcomes)

	pods, err := a.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Msg.GetItems()) != len(created) {
		t.Errorf("%d pods after %d rounds that created %d", len(pods.Msg.GetItems()), rounds, len(created))
	}
	for i := range rounds {
		name := fmt.Sprintf("ns%d", i)
		res, err := a.namespaces.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: name}))
		if err != nil {
			t.Fatal(err)
		}
		ns := res.Msg
		ns.Metadata.Finalizers = nil
		_, err = a.namespaces.Update(ctx, connect.NewRequest(ns))
		if created[name] != (connect.CodeOf(err) == connect.CodeFailedPrecondition) {
			t.Errorf("namespace %s (pod created: %v): removing its finalizer: %v", name, created[name], err)
		}
	}
}
