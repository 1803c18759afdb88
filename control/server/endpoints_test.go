package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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

// epEnv is an API server over a real store with the endpoints controller
// running against it, as the leader runs it.
type epEnv struct {
	services  skiffv1connect.ServiceServiceClient
	pods      skiffv1connect.PodServiceClient
	endpoints skiffv1connect.EndpointsServiceClient
	// writes counts the Endpoints creates and updates the controller made.
	writes atomic.Int64
}

// countingEndpoints counts the controller's writes.
type countingEndpoints struct {
	skiffv1connect.EndpointsServiceClient
	n *atomic.Int64
}

func (c countingEndpoints) Create(ctx context.Context, r *connect.Request[skiffv1.Endpoints]) (*connect.Response[skiffv1.Endpoints], error) {
	c.n.Add(1)
	return c.EndpointsServiceClient.Create(ctx, r)
}

func (c countingEndpoints) Update(ctx context.Context, r *connect.Request[skiffv1.Endpoints]) (*connect.Response[skiffv1.Endpoints], error) {
	c.n.Add(1)
	return c.EndpointsServiceClient.Update(ctx, r)
}

func newEPEnv(t *testing.T) *epEnv {
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
	e := &epEnv{
		services:  skiffv1connect.NewServiceServiceClient(srv.Client(), srv.URL),
		pods:      skiffv1connect.NewPodServiceClient(srv.Client(), srv.URL),
		endpoints: skiffv1connect.NewEndpointsServiceClient(srv.Client(), srv.URL),
	}
	run, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		(&controllers.EndpointsController{Services: e.services, Pods: e.pods, Endpoints: countingEndpoints{e.endpoints, &e.writes}, Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))}).Run(run)
	})
	t.Cleanup(func() { stop(); wg.Wait() }) // before the server closes (cleanups run last first)
	return e
}

// runPod creates a pod as the scheduler and agent would leave it: bound,
// running at ip, ready or not.
func (e *epEnv) runPod(t *testing.T, name, ip string, ready bool, labels map[string]string, ports ...*skiffv1.ContainerPort) {
	t.Helper()
	ctx := context.Background()
	res, err := e.pods.Create(ctx, connect.NewRequest(&skiffv1.Pod{
		Metadata: &skiffv1.ObjectMeta{Name: name, Labels: labels},
		Spec:     &skiffv1.PodSpec{Containers: []*skiffv1.Container{{Name: "c", Image: "hello", Ports: ports}}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	e.setReady(t, res.Msg, ip, ready)
}

func (e *epEnv) setReady(t *testing.T, p *skiffv1.Pod, ip string, ready bool) {
	t.Helper()
	st := "False"
	if ready {
		st = "True"
	}
	p.Status = &skiffv1.PodStatus{Phase: "Running", PodIp: ip, PodIps: []*skiffv1.PodIP{{Ip: ip}}, Conditions: []*skiffv1.Condition{{Type: "Ready", Status: st}}}
	p.Metadata.ResourceVersion = 0
	if _, err := e.pods.UpdateStatus(context.Background(), connect.NewRequest(p)); err != nil {
		t.Fatal(err)
	}
}

// endpoints reads a service's endpoints as "ready: ip:port ...; not ready:
// ...", or "none" when there is no Endpoints object.
func (e *epEnv) endpointsText(name string) string {
	res, err := e.endpoints.Get(context.Background(), connect.NewRequest(&skiffv1.GetRequest{Name: name}))
	if connect.CodeOf(err) == connect.CodeNotFound {
		return "none"
	}
	if err != nil {
		return err.Error()
	}
	var ready, notReady []string
	for _, ss := range res.Msg.Subsets {
		for _, p := range ss.Ports {
			for _, a := range ss.Addresses {
				ready = append(ready, fmt.Sprintf("%s:%s=%d", a.Ip, p.Name, p.Port))
			}
			for _, a := range ss.NotReadyAddresses {
				notReady = append(notReady, fmt.Sprintf("%s:%s=%d", a.Ip, p.Name, p.Port))
			}
		}
	}
	slices.Sort(ready)
	slices.Sort(notReady)
	return "ready: " + strings.Join(ready, " ") + "; not ready: " + strings.Join(notReady, " ")
}

func (e *epEnv) waitEndpoints(t *testing.T, name, want string) {
	t.Helper()
	var got string
	eventually(t, 5*time.Second, func() bool { got = e.endpointsText(name); return got == want },
		func() string { return fmt.Sprintf("endpoints of %s: %q, want %q", name, got, want) })
}

func TestEndpointsController(t *testing.T) {
	e := newEPEnv(t)
	ctx := context.Background()
	web := map[string]string{"app": "web"}
	_, err := e.services.Create(ctx, connect.NewRequest(&skiffv1.Service{
		Metadata: &skiffv1.ObjectMeta{Name: "web"},
		Spec: &skiffv1.ServiceSpec{Selector: web, Ports: []*skiffv1.ServicePort{
			{Name: "http", Port: 80, TargetPort: "http"},
			{Name: "admin", Port: 9000, TargetPort: "9001"},
		}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	// A service with no pods yet has empty endpoints.
	e.waitEndpoints(t, "web", "ready: ; not ready: ")

	httpPort := &skiffv1.ContainerPort{Name: "http", ContainerPort: 8080}
	e.runPod(t, "a", "10.244.0.2", true, web, httpPort)
	e.runPod(t, "b", "10.244.0.3", false, web, httpPort)
	e.runPod(t, "plain", "10.244.0.4", true, web) // no port named http
	e.runPod(t, "db", "10.244.0.5", true, map[string]string{"app": "db"}, httpPort)
	e.waitEndpoints(t, "web", "ready: 10.244.0.2:admin=9001 10.244.0.2:http=8080 10.244.0.4:admin=9001; not ready: 10.244.0.3:admin=9001 10.244.0.3:http=8080")

	// b becomes ready; a goes (deleted at once, as its node confirms).
	res, err := e.pods.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: "b"}))
	if err != nil {
		t.Fatal(err)
	}
	e.setReady(t, res.Msg, "10.244.0.3", true)
	e.waitEndpoints(t, "web", "ready: 10.244.0.2:admin=9001 10.244.0.2:http=8080 10.244.0.3:admin=9001 10.244.0.3:http=8080 10.244.0.4:admin=9001; not ready: ")
	deleted := time.Now()
	if _, err := e.pods.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: "a", GracePeriodSeconds: proto.Int64(0)})); err != nil {
		t.Fatal(err)
	}
	e.waitEndpoints(t, "web", "ready: 10.244.0.3:admin=9001 10.244.0.3:http=8080 10.244.0.4:admin=9001; not ready: ")
	t.Logf("a deleted pod left the endpoints after %s", time.Since(deleted).Round(time.Millisecond))

	// Endpoints the controller wrote whose service is gone (deleted while
	// no leader ran it) are deleted.
	if _, err := e.endpoints.Create(ctx, connect.NewRequest(&skiffv1.Endpoints{
		Metadata: &skiffv1.ObjectMeta{Name: "orphan", Labels: map[string]string{controllers.ManagedByLabel: controllers.ManagedBy}},
	})); err != nil {
		t.Fatal(err)
	}
	e.waitEndpoints(t, "orphan", "none")

	// Hand-written endpoints of a service without a selector are left alone.
	if _, err := e.services.Create(ctx, connect.NewRequest(&skiffv1.Service{
		Metadata: &skiffv1.ObjectMeta{Name: "ext"},
		Spec:     &skiffv1.ServiceSpec{Ports: []*skiffv1.ServicePort{{Port: 5432}}},
	})); err != nil {
		t.Fatal(err)
	}
	if _, err := e.endpoints.Create(ctx, connect.NewRequest(&skiffv1.Endpoints{
		Metadata: &skiffv1.ObjectMeta{Name: "ext"},
		Subsets:  []*skiffv1.EndpointSubset{{Addresses: []*skiffv1.EndpointAddress{{Ip: "192.0.2.10"}}, Ports: []*skiffv1.EndpointPort{{Port: 5432}}}},
	})); err != nil {
		t.Fatal(err)
	}

	// Deleting the service deletes its endpoints.
	if _, err := e.services.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: "web"})); err != nil {
		t.Fatal(err)
	}
	e.waitEndpoints(t, "web", "none")
	if got := e.endpointsText("ext"); got != "ready: 192.0.2.10:=5432; not ready: " {
		t.Errorf("hand-written endpoints of ext: %q", got)
	}
	if _, err := e.services.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: "ext"})); err != nil {
		t.Fatal(err)
	}
	// The controller deletes only the Endpoints it manages: ext's are the
	// user's. Its service going is a change the controller has seen once
	// web's endpoints are gone and a new service's appear.
	if _, err := e.services.Create(ctx, connect.NewRequest(&skiffv1.Service{
		Metadata: &skiffv1.ObjectMeta{Name: "marker"},
		Spec:     &skiffv1.ServiceSpec{Selector: web, Ports: []*skiffv1.ServicePort{{Port: 1}}},
	})); err != nil {
		t.Fatal(err)
	}
	e.waitEndpoints(t, "marker", "ready: 10.244.0.3:=1 10.244.0.4:=1; not ready: ")
	if got := e.endpointsText("ext"); got != "ready: 192.0.2.10:=5432; not ready: " {
		t.Errorf("hand-written endpoints of ext after its service went: %q", got)
	}
}

// TestEndpointsControllerCoalesces: a rollout of many pods writes a
// service's endpoints far fewer times than there are pod changes.
func TestEndpointsControllerCoalesces(t *testing.T) {
	e := newEPEnv(t)
	ctx := context.Background()
	web := map[string]string{"app": "web"}
	if _, err := e.services.Create(ctx, connect.NewRequest(&skiffv1.Service{
		Metadata: &skiffv1.ObjectMeta{Name: "web"},
		Spec:     &skiffv1.ServiceSpec{Selector: web, Ports: []*skiffv1.ServicePort{{Port: 80}}},
	})); err != nil {
		t.Fatal(err)
	}
	e.waitEndpoints(t, "web", "ready: ; not ready: ")
	const n = 200
	start := time.Now()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				e.runPod(t, fmt.Sprintf("p%d", i), fmt.Sprintf("10.244.%d.%d", i/200, 2+i%200), true, web)
			}
		})
	}
	wg.Wait()
	created := time.Since(start)
	var count int
	eventually(t, 10*time.Second, func() bool {
		res, err := e.endpoints.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: "web"}))
		count = 0
		if err == nil {
			for _, ss := range res.Msg.Subsets {
				count += len(ss.Addresses)
			}
		}
		return count == n
	}, func() string { return fmt.Sprintf("%d ready addresses, want %d", count, n) })
	elapsed := time.Since(start)
	writes := e.writes.Load()
	t.Logf("%d pods created and made ready (%d pod writes) in %s, all in the endpoints after %s: %d endpoints writes",
		n, 2*n, created.Round(time.Millisecond), elapsed.Round(time.Millisecond), writes)
	// At most one write per batch period, whatever the machine's speed
	// (plus the first, for the empty endpoints).
	if limit := int64(elapsed/controllers.DefaultEndpointsBatch) + 2; writes > limit {
		t.Errorf("%d endpoints writes for %d pods in %s: more than one per %s", writes, n, elapsed, controllers.DefaultEndpointsBatch)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
