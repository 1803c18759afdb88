package scheduler

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"skiff.dev/skiff/control/api/apitest"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

// liveAPI is an in-memory pod and node API with watches, as the apiserver
// serves them to the scheduler: every write gets the next revision and is
// sent to every watch; BindBatch binds only unbound pods.
type liveAPI struct {
	skiffv1connect.UnimplementedPodServiceHandler
	mu       sync.Mutex
	rev      uint64
	pods     map[string]*skiffv1.Pod
	nodes    map[string]*skiffv1.Node
	watchers map[chan any]bool
	history  []any    // every event, the one at revision r at r-1
	batches  []int    // the size of each BindBatch
	binds    []string // pod=node of every successful binding, in order
}

func newLiveAPI() *liveAPI {
	return &liveAPI{pods: map[string]*skiffv1.Pod{}, nodes: map[string]*skiffv1.Node{}, watchers: map[chan any]bool{}}
}

// put stores a pod or node and tells the watches; mu must be held.
func (a *liveAPI) put(typ skiffv1.EventType, o any) {
	a.rev++
	switch o := o.(type) {
	case *skiffv1.Pod:
		o.Metadata.ResourceVersion = a.rev
		if typ == skiffv1.EventType_EVENT_TYPE_DELETED {
			delete(a.pods, o.Metadata.Name)
		} else {
			a.pods[o.Metadata.Name] = o
		}
		a.send(&skiffv1.PodWatchEvent{Type: typ, Object: proto.Clone(o).(*skiffv1.Pod)})
	case *skiffv1.Node:
		o.Metadata.ResourceVersion = a.rev
		a.nodes[o.Metadata.Name] = o
		a.send(&skiffv1.NodeWatchEvent{Type: typ, Object: proto.Clone(o).(*skiffv1.Node)})
	}
}

// send records an event and queues it to every watch; mu must be held.
func (a *liveAPI) send(ev any) {
	a.history = append(a.history, ev)
	for w := range a.watchers {
		w <- ev
	}
}

func (a *liveAPI) addPod(p *skiffv1.Pod) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.put(skiffv1.EventType_EVENT_TYPE_ADDED, p)
}

func (a *liveAPI) addNode(n *skiffv1.Node) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.put(skiffv1.EventType_EVENT_TYPE_ADDED, n)
}

// setPhase changes a pod's phase, as its node would.
func (a *liveAPI) setPhase(name, phase string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := proto.Clone(a.pods[name]).(*skiffv1.Pod)
	p.Status.Phase = phase
	a.put(skiffv1.EventType_EVENT_TYPE_MODIFIED, p)
}

func (a *liveAPI) nodeOf(name string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pods[name].GetSpec().GetNodeName()
}

func (a *liveAPI) List(context.Context, *connect.Request[skiffv1.ListRequest]) (*connect.Response[skiffv1.PodList], error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := &skiffv1.PodList{ResourceVersion: a.rev}
	for _, p := range a.pods {
		l.Items = append(l.Items, proto.Clone(p).(*skiffv1.Pod))
	}
	return connect.NewResponse(l), nil
}

func (a *liveAPI) watch(ctx context.Context, rev uint64, send func(any) error) error {
	a.mu.Lock()
	if rev > a.rev {
		a.mu.Unlock()
		return connect.NewError(connect.CodeOutOfRange, fmt.Errorf("resourceVersion %d is in the future", rev))
	}
	w := make(chan any, 100000)
	for _, ev := range a.history[rev:] {
		w <- ev
	}
	a.watchers[w] = true
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.watchers, w)
		a.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-w:
			if err := send(ev); err != nil {
				return err
			}
		}
	}
}

func (a *liveAPI) Watch(ctx context.Context, r *connect.Request[skiffv1.WatchRequest], st *connect.ServerStream[skiffv1.PodWatchEvent]) error {
	return a.watch(ctx, r.Msg.ResourceVersion, func(ev any) error {
		if ev, ok := ev.(*skiffv1.PodWatchEvent); ok {
			return st.Send(ev)
		}
		return nil
	})
}

func (a *liveAPI) UpdateStatus(_ context.Context, r *connect.Request[skiffv1.Pod]) (*connect.Response[skiffv1.Pod], error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := proto.Clone(a.pods[r.Msg.Metadata.Name]).(*skiffv1.Pod)
	p.Status = r.Msg.Status
	a.put(skiffv1.EventType_EVENT_TYPE_MODIFIED, p)
	return connect.NewResponse(p), nil
}

func (a *liveAPI) BindBatch(_ context.Context, r *connect.Request[skiffv1.BindBatchRequest]) (*connect.Response[skiffv1.BindBatchResponse], error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.batches = append(a.batches, len(r.Msg.Bindings))
	out := &skiffv1.BindBatchResponse{}
	for _, b := range r.Msg.Bindings {
		cur := a.pods[b.Name]
		switch {
		case cur == nil:
			out.Results = append(out.Results, &skiffv1.BindResult{Code: connect.CodeNotFound.String()})
		case cur.Spec.NodeName != "":
			out.Results = append(out.Results, &skiffv1.BindResult{Code: connect.CodeFailedPrecondition.String(), Message: "already bound"})
		default:
			p := proto.Clone(cur).(*skiffv1.Pod)
			p.Spec.NodeName = b.NodeName
			a.put(skiffv1.EventType_EVENT_TYPE_MODIFIED, p)
			a.binds = append(a.binds, b.Name+"="+b.NodeName)
			out.Results = append(out.Results, &skiffv1.BindResult{ResourceVersion: a.rev})
		}
	}
	return connect.NewResponse(out), nil
}

// liveNodes is liveAPI's node service.
type liveNodes struct {
	skiffv1connect.UnimplementedNodeServiceHandler
	api *liveAPI
}

func (n liveNodes) List(context.Context, *connect.Request[skiffv1.ListRequest]) (*connect.Response[skiffv1.NodeList], error) {
	n.api.mu.Lock()
	defer n.api.mu.Unlock()
	l := &skiffv1.NodeList{ResourceVersion: n.api.rev}
	for _, nd := range n.api.nodes {
		l.Items = append(l.Items, proto.Clone(nd).(*skiffv1.Node))
	}
	return connect.NewResponse(l), nil
}

func (n liveNodes) Watch(ctx context.Context, r *connect.Request[skiffv1.WatchRequest], st *connect.ServerStream[skiffv1.NodeWatchEvent]) error {
	return n.api.watch(ctx, r.Msg.ResourceVersion, func(ev any) error {
		if ev, ok := ev.(*skiffv1.NodeWatchEvent); ok {
			return st.Send(ev)
		}
		return nil
	})
}

// runScheduler serves api and runs a scheduler on it (resyncing only
// hourly, so that what it does it does on watch events) until the test
// ends.
func runScheduler(t *testing.T, api *liveAPI) {
	t.Helper()
	runHeldScheduler(t, api, nil)
}

// runHeldScheduler is runScheduler with a Hold, and returns the scheduler.
func runHeldScheduler(t *testing.T, api *liveAPI, hold <-chan struct{}) *Scheduler {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(skiffv1connect.NewPodServiceHandler(api))
	mux.Handle(skiffv1connect.NewNodeServiceHandler(liveNodes{api: api}))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.Start()
	ctx, cancel := context.WithCancel(context.Background())
	s := New(Config{
		Pods: skiffv1connect.NewPodServiceClient(srv.Client(), srv.URL), Nodes: skiffv1connect.NewNodeServiceClient(srv.Client(), srv.URL),
		Now: func() time.Time { return now }, Resync: time.Hour, Hold: hold,
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
	})
	return s
}

// eventually waits up to 10 s for cond, through the shared wait.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	apitest.Eventually(t, 10*time.Second, cond, func() string { return "timed out waiting for " + what })
}

// TestRunBindsInBatches: pods waiting when the scheduler starts are bound
// in batches of bindBatchSize, each once, spread over the nodes; pods
// created afterwards are bound too.
func TestRunBindsInBatches(t *testing.T) {
	api := newLiveAPI()
	for i := range 4 {
		api.addNode(node(fmt.Sprintf("n%d", i), alloc("", "", "1000")))
	}
	const pods = 1200
	for i := range pods - 200 {
		api.addPod(pod(fmt.Sprintf("p%04d", i), "", ""))
	}
	runScheduler(t, api)
	for i := pods - 200; i < pods; i++ {
		api.addPod(pod(fmt.Sprintf("p%04d", i), "", ""))
	}
	eventually(t, "every pod bound", func() bool {
		api.mu.Lock()
		defer api.mu.Unlock()
		return len(api.binds) == pods
	})
	api.mu.Lock()
	defer api.mu.Unlock()
	perNode := map[string]int{}
	for _, p := range api.pods {
		perNode[p.Spec.NodeName]++
	}
	for i := range 4 {
		if n := perNode[fmt.Sprintf("n%d", i)]; n != pods/4 {
			t.Errorf("node n%d has %d pods, want %d: %v", i, n, pods/4, perNode)
		}
	}
	// The first 1000 in two full calls; the rest as they come.
	full := 0
	for _, n := range api.batches {
		if n == bindBatchSize {
			full++
		}
		if n > bindBatchSize {
			t.Errorf("a BindBatch of %d pods, more than %d", n, bindBatchSize)
		}
	}
	if full < 2 {
		t.Errorf("BindBatch calls of %v pods, want two of %d", api.batches, bindBatchSize)
	}
}

// TestRunHolds: a held scheduler fills its queue from its watches and
// binds nothing; once released it binds the whole backlog.
func TestRunHolds(t *testing.T) {
	api := newLiveAPI()
	api.addNode(node("a", alloc("", "", "100")))
	for i := range 3 {
		api.addPod(pod(fmt.Sprintf("p%d", i), "", ""))
	}
	hold := make(chan struct{})
	s := runHeldScheduler(t, api, hold)
	api.addPod(pod("p3", "", "")) // seen by the watch, not the listing
	eventually(t, "every pod queued", func() bool {
		s.cache.mu.Lock()
		defer s.cache.mu.Unlock()
		return s.cache.synced.nodes && len(s.cache.queue) == 4
	})
	api.mu.Lock()
	binds := len(api.binds)
	api.mu.Unlock()
	if binds != 0 {
		t.Fatalf("%d pods bound while held, want none", binds)
	}
	close(hold)
	eventually(t, "every pod bound", func() bool {
		api.mu.Lock()
		defer api.mu.Unlock()
		return len(api.binds) == 4
	})
}

// TestRunRetriesWhenRoomAppears: a pod that fits nowhere is placed as soon
// as a node is added, and one that waits for a full node as soon as a pod
// there finishes, each without waiting for the resync.
func TestRunRetriesWhenRoomAppears(t *testing.T) {
	api := newLiveAPI()
	runScheduler(t, api)
	api.addPod(pod("first", "", ""))
	eventually(t, "first marked unschedulable", func() bool {
		api.mu.Lock()
		defer api.mu.Unlock()
		c := podScheduled(api.pods["first"])
		return c != nil && c.Status == "False" && strings.Contains(c.Message, "0/0 nodes are available")
	})
	api.addNode(node("a", alloc("", "", "1")))
	eventually(t, "first bound once a node is added", func() bool { return api.nodeOf("first") == "a" })
	api.addPod(pod("second", "", ""))
	eventually(t, "second marked unschedulable", func() bool {
		api.mu.Lock()
		defer api.mu.Unlock()
		c := podScheduled(api.pods["second"])
		return c != nil && strings.Contains(c.Message, "1 Too many pods")
	})
	api.setPhase("first", "Succeeded")
	eventually(t, "second bound once first finished", func() bool { return api.nodeOf("second") == "a" })
}

// TestTwoSchedulersBindOnce: two schedulers running at once, as briefly
// during a leader change, still bind each pod once.
func TestTwoSchedulersBindOnce(t *testing.T) {
	api := newLiveAPI()
	api.addNode(node("a", alloc("", "", "1000")))
	runScheduler(t, api)
	runScheduler(t, api)
	for i := range 300 {
		api.addPod(pod(fmt.Sprintf("p%03d", i), "", ""))
	}
	eventually(t, "every pod bound", func() bool {
		api.mu.Lock()
		defer api.mu.Unlock()
		for _, p := range api.pods {
			if p.Spec.NodeName == "" {
				return false
			}
		}
		return true
	})
	api.mu.Lock()
	defer api.mu.Unlock()
	if len(api.binds) != 300 {
		t.Errorf("%d bindings for 300 pods", len(api.binds))
	}
}

// TestRunRecountsAChangedNode: a node that changes (here, room for one pod
// more) is counted afresh with the pods already on it: the pod waiting for
// room is placed, and the next one waits again.
func TestRunRecountsAChangedNode(t *testing.T) {
	api := newLiveAPI()
	api.addNode(node("a", alloc("", "", "1")))
	runScheduler(t, api)
	api.addPod(pod("first", "", ""))
	eventually(t, "first bound", func() bool { return api.nodeOf("first") == "a" })
	waits := func(name string) func() bool {
		return func() bool {
			api.mu.Lock()
			defer api.mu.Unlock()
			c := podScheduled(api.pods[name])
			return c != nil && c.Status == "False" && strings.Contains(c.Message, "1 Too many pods")
		}
	}
	api.addPod(pod("second", "", ""))
	eventually(t, "second waiting for room", waits("second"))
	api.mu.Lock()
	n := proto.Clone(api.nodes["a"]).(*skiffv1.Node)
	n.Status.Allocatable["pods"] = "2"
	api.put(skiffv1.EventType_EVENT_TYPE_MODIFIED, n)
	api.mu.Unlock()
	eventually(t, "second bound once the node has room", func() bool { return api.nodeOf("second") == "a" })
	api.addPod(pod("third", "", ""))
	eventually(t, "third waiting for room", waits("third"))
}
