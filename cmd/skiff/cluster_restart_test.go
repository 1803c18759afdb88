package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

// TestClusterRestartAndSnapshot writes namespaces and pods, stops the
// three servers (SIGTERM) and starts them again: every object is as it
// was, resourceVersion included. Then a snapshot saved from the cluster and
// restored into a new data directory starts a single server that holds
// the same objects.
func TestClusterRestartAndSnapshot(t *testing.T) {
	c := startServers(t)
	writeObjects(t, c)
	var before objects
	var why string
	// The unbound pod waits for a node: the scheduler records once why.
	eventually(t, 20*time.Second, func() bool {
		before, why = readObjects(c.http, c.baseURL(c.all[0].api), false)
		return why == "" && strings.Contains(prototext.Format(before["pod/shop/waiting"]), "Unschedulable")
	}, func() string { return "the unbound pod was not marked Unschedulable: " + why })
	t.Logf("%d objects before the restart: %s", len(before), strings.Join(before.keys(), " "))

	// SIGTERM to all three at once; each exits 0.
	for _, s := range c.all {
		_ = s.p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, s := range c.all {
		if err := s.p.wait(); err != nil {
			t.Errorf("server %s stopped with %v, want exit status 0", s.name, err)
		}
	}
	for _, s := range c.all {
		s.start(t)
	}
	c.waitFormed(60 * time.Second)
	for _, s := range c.all {
		got, why := readObjects(c.http, c.baseURL(s.api), false)
		if why != "" {
			t.Fatalf("after the restart, through %s: %s", s.name, why)
		}
		if d := got.diff(before); d != "" {
			t.Errorf("after the restart, through %s: %s", s.name, d)
		}
		var d string
		eventually(t, 10*time.Second, func() bool {
			got, why := readObjects(c.http, c.baseURL(s.api), true)
			d = why + got.diff(before)
			return d == ""
		}, func() string { return fmt.Sprintf("after the restart, %s's own objects: %s", s.name, d) })
	}

	// A snapshot of the cluster, taken through a follower, seeds a new
	// server of its own with the same objects.
	leader := c.leader()
	follower := c.all[0]
	if follower == leader {
		follower = c.all[1]
	}
	dir := t.TempDir()
	snap := filepath.Join(dir, "cluster.snap")
	cli := c.cli(follower)
	out := cli.mustSkiff("snapshot", "save", snap)
	m := regexp.MustCompile(`^saved snapshot at revision (\d+) `).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("snapshot save printed %q", out)
	}
	rev, _ := strconv.ParseUint(m[1], 10, 64)
	for key, o := range before {
		if rv := o.(interface{ GetMetadata() *skiffv1.ObjectMeta }).GetMetadata().GetResourceVersion(); rv > rev {
			t.Errorf("%s at rv %d, after the snapshot's revision %d", key, rv, rev)
		}
	}
	restored := filepath.Join(dir, "restored")
	if out := cli.mustSkiff("snapshot", "restore", snap, "--data-dir", restored); !strings.HasPrefix(out, "restored snapshot at revision "+m[1]+" ") {
		t.Errorf("snapshot restore printed %q", out)
	}
	// It joins with the cluster's token, so that the admin's token, which
	// the snapshot holds, stays valid (TestSnapshotRestoredServerAdmin: not
	// so without it).
	api := freeHostAddr(t, "127.0.0.1", false)
	logs := &syncWriter{w: new(bytes.Buffer)}
	single := startProc(t, "restored", logs, "server", "--data-dir", restored, "--listen", api, "--token", c.token,
		"--client-config", filepath.Join(dir, "client.config"), "--log-level", "warn")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("restored server output:\n%s", logs.String())
		}
	})
	// Its admin is the one of the client config it writes.
	admin := waitAdminConfig(t, restored, 20*time.Second)
	tr, closeIdle := adminTransport(t, admin)
	defer closeIdle()
	hc := &http.Client{Transport: tr, Timeout: 15 * time.Second}
	var got objects
	eventually(t, 20*time.Second, func() bool {
		got, why = readObjects(hc, admin.baseURL(), false)
		return why == "" || single.exited()
	}, func() string { return "the restored server does not answer: " + why })
	if single.exited() {
		t.Fatalf("the restored server exited: %v", single.err)
	}
	if d := got.diff(before); d != "" {
		t.Errorf("the server restored from the snapshot: %s", d)
	}
	if err := single.stop(); err != nil {
		t.Errorf("the restored server stopped with %v, want exit status 0", err)
	}
}

// writeObjects writes namespaces, pods and changes to them through the
// servers in turn, so that revisions differ from creation order. The pods
// are bound to a node that does not exist (so that neither a scheduler nor
// an agent changes them), but one, which no node can take.
func writeObjects(t *testing.T, c *servers) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	turn := 0
	via := func() *serverProc { turn++; return c.all[turn%len(c.all)] }
	for _, name := range []string{"shop", "tools", "gone"} {
		if _, err := via().namespaces.Create(ctx, connect.NewRequest(&skiffv1.Namespace{Metadata: &skiffv1.ObjectMeta{Name: name}})); err != nil {
			t.Fatalf("create namespace %s: %v", name, err)
		}
	}
	pod := func(ns, name, node string) *skiffv1.Pod {
		return &skiffv1.Pod{
			Metadata: &skiffv1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}},
			Spec:     &skiffv1.PodSpec{NodeName: node, Containers: []*skiffv1.Container{{Name: name, Image: "hello"}}},
		}
	}
	for _, p := range []*skiffv1.Pod{
		pod("default", "web", "edge-9"), pod("shop", "cart", "edge-9"), pod("shop", "old", "edge-9"),
		pod("tools", "lint", "edge-9"), pod("shop", "waiting", ""),
	} {
		if _, err := via().pods.Create(ctx, connect.NewRequest(p)); err != nil {
			t.Fatalf("create pod %s/%s: %v", p.Metadata.Namespace, p.Metadata.Name, err)
		}
	}
	res, err := via().pods.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Namespace: "default", Name: "web"}))
	if err != nil {
		t.Fatal(err)
	}
	web := res.Msg
	web.Metadata.Labels["tier"] = "front"
	if _, err := via().pods.Update(ctx, connect.NewRequest(web)); err != nil {
		t.Fatalf("update pod web: %v", err)
	}
	zero := int64(0)
	if _, err := via().pods.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Namespace: "shop", Name: "old", GracePeriodSeconds: &zero})); err != nil {
		t.Fatalf("delete pod old: %v", err)
	}
	if _, err := via().namespaces.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: "gone"})); err != nil {
		t.Fatalf("delete namespace gone: %v", err)
	}
	// Deletion cascades: the namespace is Terminating until the leader's
	// namespace controller has emptied it and let it go.
	var last error
	eventually(t, 20*time.Second, func() bool {
		_, last = via().namespaces.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: "gone"}))
		return connect.CodeOf(last) == connect.CodeNotFound
	}, func() string { return fmt.Sprintf("namespace gone still there: get says %v", last) })
}

// objects are a cluster's namespaces and pods by kind/namespace/name.
type objects map[string]proto.Message

// readObjects lists the namespaces and pods through the server at base,
// linearizable or stale; why says what failed.
func readObjects(hc *http.Client, base string, stale bool) (objects, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	header := func(r interface{ Header() http.Header }) {
		if stale {
			r.Header().Set("Skiff-Consistency", "stale")
		}
	}
	out := objects{}
	nreq := connect.NewRequest(&skiffv1.ListRequest{})
	header(nreq)
	ns, err := skiffv1connect.NewNamespaceServiceClient(hc, base).List(ctx, nreq)
	if err != nil {
		return nil, fmt.Sprintf("list namespaces: %v", err)
	}
	for _, n := range ns.Msg.GetItems() {
		out["namespace/"+n.GetMetadata().GetName()] = n
	}
	preq := connect.NewRequest(&skiffv1.ListRequest{})
	header(preq)
	pods, err := skiffv1connect.NewPodServiceClient(hc, base).List(ctx, preq)
	if err != nil {
		return nil, fmt.Sprintf("list pods: %v", err)
	}
	for _, p := range pods.Msg.GetItems() {
		out["pod/"+p.GetMetadata().GetNamespace()+"/"+p.GetMetadata().GetName()] = p
	}
	return out, ""
}

func (o objects) keys() []string {
	var ks []string
	for k := range o {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// diff describes how o differs from want, object by object; empty when
// every object is the same, resourceVersion, uid and status included.
func (o objects) diff(want objects) string {
	var d []string
	for _, k := range want.keys() {
		got, ok := o[k]
		switch {
		case !ok:
			d = append(d, k+" is missing")
		case !proto.Equal(got, want[k]):
			d = append(d, fmt.Sprintf("%s is {%s}, want {%s}", k, prototext.Format(got), prototext.Format(want[k])))
		}
	}
	for _, k := range o.keys() {
		if _, ok := want[k]; !ok {
			d = append(d, k+" is not expected")
		}
	}
	return strings.Join(d, "; ")
}
