package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/store"
)

// fakeAgents are the agents of a test's nodes: each answers PodStats
// with the metrics it holds for the pods asked, or with its error, and
// records what it was asked.
type fakeAgents struct {
	mu      sync.Mutex
	metrics map[string][]*skiffv1.PodMetrics // by node
	errs    map[string]error                 // by node
	asked   map[string][]string              // by node: "ns names..." per call
}

func (f *fakeAgents) dial(node, _ string) skiffv1connect.AgentServiceClient {
	return fakeAgent{f: f, node: node}
}

func (f *fakeAgents) calls(node string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.asked[node])
}

func (f *fakeAgents) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = map[string][]string{}
}

type fakeAgent struct {
	skiffv1connect.AgentServiceClient // nil: only PodStats is called
	f                                 *fakeAgents
	node                              string
}

func (a fakeAgent) PodStats(_ context.Context, req *connect.Request[skiffv1.PodStatsRequest]) (*connect.Response[skiffv1.PodStatsResponse], error) {
	f := a.f
	f.mu.Lock()
	defer f.mu.Unlock()
	names := slices.Sorted(slices.Values(req.Msg.GetNames()))
	f.asked[a.node] = append(f.asked[a.node], strings.TrimSpace(req.Msg.GetNamespace()+" "+strings.Join(names, " ")))
	if err := f.errs[a.node]; err != nil {
		return nil, err
	}
	res := &skiffv1.PodStatsResponse{}
	for _, m := range f.metrics[a.node] {
		if (req.Msg.GetNamespace() == "" || m.Namespace == req.Msg.GetNamespace()) && (len(names) == 0 || slices.Contains(names, m.Name)) {
			res.Pods = append(res.Pods, m)
		}
	}
	return connect.NewResponse(res), nil
}

func metricsOf(p *skiffv1.Pod, milliCores, mib int64) *skiffv1.PodMetrics {
	return &skiffv1.PodMetrics{
		Namespace: p.Metadata.Namespace, Name: p.Metadata.Name, Uid: p.Metadata.Uid, WindowMillis: 1000,
		Containers: []*skiffv1.ContainerMetrics{{Name: "c", CpuNanoCores: milliCores * 1e6, MemoryBytes: mib << 20}},
	}
}

// topLines renders a Top answer as the test compares it.
func topLines(res *skiffv1.TopPodsResponse) []string {
	var out []string
	for _, p := range res.GetPods() {
		for _, c := range p.GetContainers() {
			out = append(out, fmt.Sprintf("%s/%s %s %dm %dMi", p.Namespace, p.Name, c.Name, c.CpuNanoCores/1e6, c.MemoryBytes>>20))
		}
	}
	for _, n := range res.GetUnreachableNodes() {
		out = append(out, fmt.Sprintf("unreachable %s: %s", n.Node, n.Reason))
	}
	return out
}

func TestTopPods(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	agents := &fakeAgents{errs: map[string]error{}, metrics: map[string][]*skiffv1.PodMetrics{}}
	agents.reset()
	s := New(Config{Store: st, Agents: agents.dial})
	if err := s.Init(ctx); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	a := &api{
		pods:       skiffv1connect.NewPodServiceClient(srv.Client(), srv.URL),
		nodes:      skiffv1connect.NewNodeServiceClient(srv.Client(), srv.URL),
		namespaces: skiffv1connect.NewNamespaceServiceClient(srv.Client(), srv.URL),
	}
	if _, err := a.namespaces.Create(ctx, connect.NewRequest(&skiffv1.Namespace{Metadata: &skiffv1.ObjectMeta{Name: "other"}})); err != nil {
		t.Fatal(err)
	}
	for i, n := range []string{"n1", "n2", "n3"} {
		a.addNode(t, n)
		if n == "n3" {
			continue // never reported where its agent is
		}
		if _, err := a.nodes.UpdateStatus(ctx, connect.NewRequest(&skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: n}, Status: &skiffv1.NodeStatus{AgentEndpoint: fmt.Sprintf("127.0.0.1:%d", 4000+i)}})); err != nil {
			t.Fatal(err)
		}
	}
	mk := func(ns, name, node, app string) *skiffv1.Pod {
		p := testPod(ns, name, node)
		p.Metadata.Labels = map[string]string{"app": app}
		return a.create(t, p)
	}
	web, db := mk("default", "web", "n1", "web"), mk("default", "db", "n1", "db")
	mk("default", "job", "n2", "web")
	mk("default", "lost", "n3", "web")
	mk("default", "pending", "", "web")
	done := mk("default", "done", "n1", "web")
	done.Status.Phase = "Succeeded"
	if _, err := a.pods.UpdateStatus(ctx, connect.NewRequest(done)); err != nil {
		t.Fatal(err)
	}
	o1 := mk("other", "o1", "n1", "web")
	stale := metricsOf(web, 999, 999) // an older pod of the same name, still on the node
	stale.Uid = "old-uid"
	agents.metrics["n1"] = []*skiffv1.PodMetrics{metricsOf(web, 3, 3), metricsOf(db, 250, 40), metricsOf(o1, 1, 1), stale}
	agents.errs["n2"] = connect.NewError(connect.CodeUnavailable, errors.New("dial tcp 127.0.0.1:4001: connect: connection refused"))

	unreachable := []string{
		"unreachable n2: read pod stats from the agent at 127.0.0.1:4001: dial tcp 127.0.0.1:4001: connect: connection refused",
		"unreachable n3: the node has not reported an agent endpoint",
	}
	tests := []struct {
		name  string
		req   *skiffv1.TopPodsRequest
		want  []string
		asked []string // of n1
	}{
		{"namespace", &skiffv1.TopPodsRequest{},
			append([]string{"default/db c 250m 40Mi", "default/web c 3m 3Mi"}, unreachable...),
			[]string{"default db web"}},
		{"label selector", &skiffv1.TopPodsRequest{Namespace: "default", LabelSelector: "app=web"},
			append([]string{"default/web c 3m 3Mi"}, unreachable...),
			[]string{"default web"}},
		{"one pod", &skiffv1.TopPodsRequest{Name: "db"},
			[]string{"default/db c 250m 40Mi"},
			[]string{"default db"}},
		{"one pod, not selected", &skiffv1.TopPodsRequest{Name: "db", LabelSelector: "app=web"}, nil, nil},
		{"every namespace", &skiffv1.TopPodsRequest{AllNamespaces: true, Namespace: "ignored"},
			append([]string{"default/db c 250m 40Mi", "default/web c 3m 3Mi", "other/o1 c 1m 1Mi"}, unreachable...),
			[]string{"db o1 web"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agents.reset()
			res, err := a.pods.Top(ctx, connect.NewRequest(tt.req))
			if err != nil {
				t.Fatalf("Top: %v", err)
			}
			if got := topLines(res.Msg); !slices.Equal(got, tt.want) {
				t.Errorf("Top:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if got := agents.calls("n1"); !slices.Equal(got, tt.asked) {
				t.Errorf("n1 was asked %q, want %q", got, tt.asked)
			}
		})
	}

	_, err = a.pods.Top(ctx, connect.NewRequest(&skiffv1.TopPodsRequest{Name: "nosuch"}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("top of a pod that does not exist: %v, want NotFound", err)
	}
	_, err = a.pods.Top(ctx, connect.NewRequest(&skiffv1.TopPodsRequest{LabelSelector: "app in (web"}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("top with a bad selector: %v, want InvalidArgument", err)
	}
}

// TestTopAuthorization: Top is a list of the namespace's pods, for the
// interceptor and for can-i alike.
func TestTopAuthorization(t *testing.T) {
	e := newAuthEnv(t)
	ctx := context.Background()
	server := e.clients(t, cred{cert: "server:s1"})
	e.reset(t, server)
	none := e.clients(t, cred{token: e.putToken(t, "noroleaaaaaa", "team", "", time.Time{})})
	view := e.clients(t, cred{token: e.putToken(t, "viewteamaaaa", "team", RoleView, time.Time{})})
	n1 := e.clients(t, cred{cert: "node:n1"})

	top := func(c *testClients, r *skiffv1.TopPodsRequest) (*skiffv1.TopPodsResponse, error) {
		res, err := c.pods.Top(ctx, connect.NewRequest(r))
		if err != nil {
			return nil, err
		}
		return res.Msg, nil
	}
	_, err := top(none, &skiffv1.TopPodsRequest{Namespace: "team"})
	wantRefusal(t, "top with no role", err, connect.CodePermissionDenied, "cannot list pods in namespace team")
	_, err = top(view, &skiffv1.TopPodsRequest{Namespace: "other"})
	wantRefusal(t, "top of another namespace", err, connect.CodePermissionDenied, "cannot list pods in namespace other")
	_, err = top(view, &skiffv1.TopPodsRequest{AllNamespaces: true})
	wantRefusal(t, "top of every namespace", err, connect.CodePermissionDenied, "cannot list pods at the cluster scope")
	_, err = top(n1, &skiffv1.TopPodsRequest{Namespace: "team"})
	wantRefusal(t, "top by a node", err, connect.CodePermissionDenied, "cannot list pods")

	// Allowed: the team's pods are on nodes n1 and n2, which never said
	// where their agents are; each is reported, and the call succeeds.
	res, err := top(view, &skiffv1.TopPodsRequest{Namespace: "team"})
	if err != nil {
		t.Fatalf("top of its own namespace: %v", err)
	}
	want := []string{
		"unreachable n1: the node has not reported an agent endpoint",
		"unreachable n2: the node has not reported an agent endpoint",
	}
	if got := topLines(res); !slices.Equal(got, want) {
		t.Errorf("top of team:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// can-i says the same.
	for _, tt := range []struct {
		c       *testClients
		ns      string
		allowed bool
	}{{none, "team", false}, {view, "team", true}, {view, "other", false}} {
		res, err := tt.c.auth.CanI(ctx, connect.NewRequest(&skiffv1.CanIRequest{Verb: "list", Kind: "pods", Namespace: tt.ns}))
		if err != nil || res.Msg.Allowed != tt.allowed {
			t.Errorf("can-i list pods -n %s: %v, %v; want allowed=%v", tt.ns, res, err, tt.allowed)
		}
	}
}
