package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

// rollDeployment is examples/ticker/deployment.yaml, 10 Wasm pods that
// run until asked to stop (maxSurge 3, maxUnavailable 2), with its
// template's VERSION set to version.
func rollDeployment(t *testing.T, version string) string {
	t.Helper()
	b, err := os.ReadFile("../../examples/ticker/deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out := strings.Replace(string(b), `value: "1"`, `value: "`+version+`"`, 1)
	if !strings.Contains(out, `value: "`+version+`"`) {
		t.Fatal("examples/ticker/deployment.yaml has no VERSION value to change")
	}
	return out
}

// TestDevDeploymentRollout rolls a 10-pod deployment over to a new
// template and back with `skiff rollout undo`, on a real node, while a
// watch of its pods checks that never fewer than replicas-maxUnavailable
// (8) are ready and never more than replicas+maxSurge (13) run.
func TestDevDeploymentRollout(t *testing.T) {
	c := startDev(t)
	c.mustSkiff("image", "import", "--data-dir", c.dataDir, "ticker", buildWasm(t, "../../examples/ticker"))
	if out := c.mustSkiff("apply", "-f", writeFile(t, "d.yaml", rollDeployment(t, "1"))); out != "deployment.apps/ticker created\n" {
		t.Errorf("apply printed %q", out)
	}
	start := time.Now()
	if out := c.mustSkiff("rollout", "status", "deployment/ticker", "--timeout", "60s"); !strings.Contains(out, `deployment "ticker" successfully rolled out`) {
		t.Fatalf("rollout status printed %q", out)
	}
	t.Logf("first rollout of 10 pods: %s", time.Since(start).Round(time.Millisecond))
	if out := c.mustSkiff("apply", "-f", writeFile(t, "d.yaml", rollDeployment(t, "1"))); out != "deployment.apps/ticker unchanged\n" {
		t.Errorf("apply of the same manifest printed %q, want unchanged", out)
	}
	if table := c.mustSkiff("get", "deploy", "ticker"); !strings.Contains(table, "NAME     READY   UP-TO-DATE   AVAILABLE   AGE") || !strings.Contains(table, "ticker   10/10   10           10") {
		t.Errorf("skiff get deploy:\n%s", table)
	}

	watch := watchRollout(t, c, "app=ticker")
	start = time.Now()
	c.mustSkiff("apply", "-f", writeFile(t, "d.yaml", rollDeployment(t, "2")))
	out := c.mustSkiff("rollout", "status", "deployment/ticker", "--timeout", "60s")
	t.Logf("rolling update of 10 pods (maxSurge 3, maxUnavailable 2): %s", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(out, "Waiting for deployment \"ticker\" rollout to finish") || !strings.HasSuffix(out, "deployment \"ticker\" successfully rolled out\n") {
		t.Errorf("rollout status printed:\n%s", out)
	}
	c.waitVersions(t, "2", 10)

	start = time.Now()
	if out := c.mustSkiff("rollout", "undo", "deployment/ticker"); out != "deployment.apps/ticker rolled back\n" {
		t.Errorf("rollout undo printed %q", out)
	}
	c.mustSkiff("rollout", "status", "deployment/ticker", "--timeout", "60s")
	t.Logf("undo of 10 pods: %s", time.Since(start).Round(time.Millisecond))
	c.waitVersions(t, "1", 10)
	watch()

	var d *skiffv1.Deployment
	eventually(t, 10*time.Second, func() bool {
		o, err := c.clients().of(kinds.Deployment).Get(context.Background(), "default", "ticker")
		d, _ = o.(*skiffv1.Deployment)
		return err == nil && d.GetMetadata().GetAnnotations()[kinds.RevisionAnnotation] == "3"
	}, func() string { return fmt.Sprintf("revision after undo: %v", d.GetMetadata().GetAnnotations()) })
	if hist := c.mustSkiff("rollout", "history", "deployment/ticker"); !strings.Contains(hist, "REVISION  CHANGE-CAUSE\n2         <none>\n3         <none>\n") {
		t.Errorf("rollout history:\n%s", hist)
	}
	if rev := c.mustSkiff("rollout", "history", "deployment/ticker", "--revision", "2"); !strings.Contains(rev, "deployment.apps/ticker with revision #2") || !strings.Contains(rev, "Env VERSION: 2") {
		t.Errorf("rollout history --revision 2:\n%s", rev)
	}
	if rs := c.mustSkiff("get", "rs"); !strings.Contains(rs, "NAME") || !strings.Contains(rs, "DESIRED   CURRENT   READY") {
		t.Errorf("skiff get rs:\n%s", rs)
	}
	current := strings.TrimPrefix(strings.TrimSpace(c.mustSkiff("get", "rs", "-l", "app=ticker,pod-template-hash", "-o", "name")), "replicaset.apps/")
	var rsDesc string
	eventually(t, 10*time.Second, func() bool {
		rsDesc = c.mustSkiff("describe", "rs", strings.Split(current, "\n")[0])
		return strings.Contains(rsDesc, "Controlled By: Deployment/ticker") && strings.Contains(rsDesc, "Pods Status:") && strings.Contains(rsDesc, "SuccessfulCreate")
	}, func() string { return "skiff describe rs:\n" + rsDesc })

	var desc string
	eventually(t, 10*time.Second, func() bool {
		desc = c.mustSkiff("describe", "deploy", "ticker")
		return strings.Contains(desc, "ScalingReplicaSet") && strings.Contains(desc, "Scaled down replica set ticker-") &&
			strings.Contains(desc, "10 desired | 10 updated | 10 total | 10 available | 0 unavailable") &&
			strings.Contains(desc, "RollingUpdateStrategy: 2 max unavailable, 3 max surge")
	}, func() string { return "skiff describe deploy ticker:\n" + desc })

	if out := c.mustSkiff("scale", "deployment/ticker", "--replicas", "3"); out != "deployment.apps/ticker scaled\n" {
		t.Errorf("scale printed %q", out)
	}
	c.waitVersions(t, "1", 3)

	// Paused, a restart waits; resumed, it replaces every pod.
	if out := c.mustSkiff("rollout", "pause", "deployment/ticker"); out != "deployment.apps/ticker paused\n" {
		t.Errorf("rollout pause printed %q", out)
	}
	before := c.podNames(t)
	if out := c.mustSkiff("rollout", "restart", "deployment/ticker"); out != "deployment.apps/ticker restarted\n" {
		t.Errorf("rollout restart printed %q", out)
	}
	var status string
	eventually(t, 10*time.Second, func() bool {
		status = c.mustSkiff("rollout", "status", "deployment/ticker", "--watch=false")
		return strings.Contains(status, "0 out of 3 new replicas have been updated")
	}, func() string { return "rollout status of a paused restart: " + status })
	c.mustSkiff("rollout", "resume", "deployment/ticker")
	c.mustSkiff("rollout", "status", "deployment/ticker", "--timeout", "60s")
	c.waitVersions(t, "1", 3)
	for _, name := range c.podNames(t) {
		if slices.Contains(before, name) {
			t.Errorf("pod %s survived the restart", name)
		}
	}
}

func (c *cluster) podNames(t *testing.T) []string {
	t.Helper()
	objs, _, err := c.clients().of(kinds.Pod).List(context.Background(), &skiffv1.ListRequest{Namespace: "default", LabelSelector: "app=ticker"})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range objs {
		out = append(out, o.GetMetadata().GetName())
	}
	return out
}

// waitVersions waits until the deployment has exactly n pods, all ready,
// all of VERSION version, and no other pod left (terminating ones included).
func (c *cluster) waitVersions(t *testing.T, version string, n int) {
	t.Helper()
	var got []string
	eventually(t, 60*time.Second, func() bool {
		objs, _, err := c.clients().of(kinds.Pod).List(context.Background(), &skiffv1.ListRequest{Namespace: "default", LabelSelector: "app=ticker"})
		if err != nil {
			return false
		}
		got = got[:0]
		good := 0
		for _, o := range objs {
			p := o.(*skiffv1.Pod)
			v := p.GetSpec().GetContainers()[0].GetEnv()[0].GetValue()
			ready := podIsReady(p) && p.GetMetadata().GetDeletionTimestamp() == nil
			got = append(got, fmt.Sprintf("%s(v%s ready=%t)", p.GetMetadata().GetName(), v, ready))
			if v == version && ready {
				good++
			}
		}
		return good == n && len(objs) == n
	}, func() string {
		return fmt.Sprintf("pods %v, want %d ready of version %s and no other", got, n, version)
	})
}

func podIsReady(p *skiffv1.Pod) bool {
	for _, c := range p.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c.GetStatus() == "True"
		}
	}
	return false
}

// watchRollout watches the pods selector picks, from now until the
// returned function is called, which then fails the test if ever fewer
// than 8 were ready (pods being deleted do not count) or more than 13 ran.
func watchRollout(t *testing.T, c *cluster, selector string) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cl := c.clients()
	objs, rev, err := cl.of(kinds.Pod).List(ctx, &skiffv1.ListRequest{Namespace: "default", LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	pods := map[string]*skiffv1.Pod{}
	for _, o := range objs {
		pods[o.GetMetadata().GetName()] = o.(*skiffv1.Pod)
	}
	st, err := cl.watching(kinds.Pod).Watch(ctx, &skiffv1.WatchRequest{Namespace: "default", LabelSelector: selector, ResourceVersion: rev})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu                 sync.Mutex
		fewest, most, seen = len(pods), len(pods), 0
		low                string
		done               = make(chan struct{})
	)
	go func() {
		defer close(done)
		defer st.Close()
		for st.Receive() {
			typ, o := st.Event()
			if typ == skiffv1.EventType_EVENT_TYPE_BOOKMARK {
				continue
			}
			if typ == skiffv1.EventType_EVENT_TYPE_DELETED {
				delete(pods, o.GetMetadata().GetName())
			} else {
				pods[o.GetMetadata().GetName()] = o.(*skiffv1.Pod)
			}
			ready, running := 0, 0
			for _, p := range pods {
				if p.GetMetadata().GetDeletionTimestamp() != nil {
					continue
				}
				running++
				if podIsReady(p) {
					ready++
				}
			}
			mu.Lock()
			seen++
			if ready < fewest {
				fewest = ready
				low = fmt.Sprintf("after %s %s", typ, o.GetMetadata().GetName())
			}
			most = max(most, running)
			mu.Unlock()
		}
	}()
	return func() {
		t.Helper()
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		t.Logf("during the rollouts: at least %d pods ready, at most %d running, over %d pod events", fewest, most, seen)
		if fewest < 8 {
			t.Errorf("only %d pods were ready (%s), want at least 8 (replicas 10 - maxUnavailable 2)", fewest, low)
		}
		if most > 13 {
			t.Errorf("%d pods ran at once, want at most 13 (replicas 10 + maxSurge 3)", most)
		}
		if seen == 0 {
			t.Error("the watch saw no pod change")
		}
	}
}
