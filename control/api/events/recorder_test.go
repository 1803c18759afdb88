package events

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"skiff.dev/skiff/control/api/apitest"

	"connectrpc.com/connect"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

// TestMain fails the run if a goroutine outlives the tests: every Run must
// return once its context ends.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeEvents stores events as the apiserver does: Create refuses a name it
// has, Update only applies at the stored resourceVersion. Safe for
// concurrent use.
type fakeEvents struct {
	skiffv1connect.EventServiceClient

	mu      sync.Mutex
	objs    map[string]*skiffv1.Event // by namespace/name
	rv      uint64
	written int // Creates and Updates that were stored
	// interfere is how many Updates lose to another writer, who raises the
	// count just before them.
	interfere int
}

func newFakeEvents() *fakeEvents { return &fakeEvents{objs: map[string]*skiffv1.Event{}} }

func key(m *skiffv1.ObjectMeta) string { return m.GetNamespace() + "/" + m.GetName() }

func (f *fakeEvents) Create(_ context.Context, r *connect.Request[skiffv1.Event]) (*connect.Response[skiffv1.Event], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := key(r.Msg.Metadata)
	if _, ok := f.objs[k]; ok {
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("events %q already exists", r.Msg.Metadata.Name))
	}
	e := proto.Clone(r.Msg).(*skiffv1.Event)
	f.rv++
	e.Metadata.ResourceVersion = f.rv
	f.objs[k] = e
	f.written++
	return connect.NewResponse(proto.Clone(e).(*skiffv1.Event)), nil
}

func (f *fakeEvents) Get(_ context.Context, r *connect.Request[skiffv1.GetRequest]) (*connect.Response[skiffv1.Event], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.objs[r.Msg.Namespace+"/"+r.Msg.Name]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("events %q not found", r.Msg.Name))
	}
	return connect.NewResponse(proto.Clone(e).(*skiffv1.Event)), nil
}

func (f *fakeEvents) Update(_ context.Context, r *connect.Request[skiffv1.Event]) (*connect.Response[skiffv1.Event], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := key(r.Msg.Metadata)
	cur, ok := f.objs[k]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("events %q not found", r.Msg.Metadata.Name))
	}
	if f.interfere > 0 {
		f.interfere--
		cur.Count++
		f.rv++
		cur.Metadata.ResourceVersion = f.rv
	}
	if r.Msg.Metadata.ResourceVersion != cur.Metadata.ResourceVersion {
		return nil, connect.NewError(connect.CodeAborted, errors.New("the object has been modified"))
	}
	e := proto.Clone(r.Msg).(*skiffv1.Event)
	f.rv++
	e.Metadata.ResourceVersion = f.rv
	f.objs[k] = e
	f.written++
	return connect.NewResponse(proto.Clone(e).(*skiffv1.Event)), nil
}

func (f *fakeEvents) writes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written
}

func testPod() *skiffv1.Pod {
	return &skiffv1.Pod{Metadata: &skiffv1.ObjectMeta{Namespace: "web", Name: "p", Uid: "u1"}}
}

// eventually is the shared wait of the tests that speak the API.
var eventually = apitest.Eventually

// TestRepeatsRaiseTheCount: the same event reported three times is one
// Event with count 3, first seen at the first report and last seen at the
// last; another event is an object of its own. No repeat is lost when
// another writer raises the count at the same time.
func TestRepeatsRaiseTheCount(t *testing.T) {
	tests := []struct {
		name       string
		interfere  int
		wantCountA int32
	}{
		{"alone", 0, 3},
		{"another writer meanwhile", 2, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
			clock := t0
			f := newFakeEvents()
			f.interfere = tt.interfere
			r := NewRecorder(Config{Events: f, Component: "agent", Host: "n1", Now: func() time.Time { return clock }})
			ctx, cancel := context.WithCancel(context.Background())
			stopped := make(chan struct{})
			go func() {
				defer close(stopped)
				r.Run(ctx)
			}()
			defer func() { cancel(); <-stopped }()

			pod := testPod()
			r.Record(pod, Warning, "BackOff", "Back-off restarting failed container %s", "c")
			clock = t0.Add(30 * time.Second)
			r.Record(pod, Normal, "Pulled", "Container image %q already present on machine", "hello")
			clock = t0.Add(time.Minute)
			r.Record(pod, Warning, "BackOff", "Back-off restarting failed container %s", "c")
			clock = t0.Add(2 * time.Minute)
			r.Record(pod, Warning, "BackOff", "Back-off restarting failed container %s", "c")

			eventually(t, 5*time.Second, func() bool { return f.writes() == 4 },
				func() string { return fmt.Sprintf("%d of 4 reports written", f.writes()) })
			cancel()
			<-stopped

			ref := &skiffv1.ObjectReference{Kind: "Pod", ApiVersion: "v1", Namespace: "web", Name: "p", Uid: "u1"}
			src := &skiffv1.EventSource{Component: "agent", Host: "n1"}
			want := map[string]*skiffv1.Event{
				"BackOff": {
					InvolvedObject: ref, Reason: "BackOff", Message: "Back-off restarting failed container c", Type: Warning,
					Count: tt.wantCountA, FirstTimestamp: timestamppb.New(t0), LastTimestamp: timestamppb.New(t0.Add(2 * time.Minute)), Source: src,
				},
				"Pulled": {
					InvolvedObject: ref, Reason: "Pulled", Message: `Container image "hello" already present on machine`, Type: Normal,
					Count: 1, FirstTimestamp: timestamppb.New(t0.Add(30 * time.Second)), LastTimestamp: timestamppb.New(t0.Add(30 * time.Second)), Source: src,
				},
			}
			if len(f.objs) != len(want) {
				t.Fatalf("%d Event objects, want %d: %v", len(f.objs), len(want), f.objs)
			}
			for _, got := range f.objs {
				if got.Metadata.Namespace != "web" || !strings.HasPrefix(got.Metadata.Name, "p.") {
					t.Errorf("event %s/%s, want it in the pod's namespace named after the pod", got.Metadata.Namespace, got.Metadata.Name)
				}
				w := want[got.Reason]
				w.Metadata = got.Metadata
				if !proto.Equal(got, w) {
					t.Errorf("event\n %v\nwant\n %v", got, w)
				}
			}
		})
	}
}

// TestNilRecorder: code given no recorder records nothing and does not
// fail.
func TestNilRecorder(t *testing.T) {
	var r *Recorder
	r.Record(testPod(), Normal, "Scheduled", "Successfully assigned %s to %s", "web/p", "n1")
}

// TestLongMessageIsCut: a message is at most 1024 bytes, cut with "...",
// and stays valid UTF-8 so that the event can still be sent.
func TestLongMessageIsCut(t *testing.T) {
	tests := []struct {
		name string
		msg  string
		want string
	}{
		{"short", "container c exited", "container c exited"},
		{"exactly 1024", strings.Repeat("a", 1024), strings.Repeat("a", 1024)},
		{"1025", strings.Repeat("a", 1025), strings.Repeat("a", 1021) + "..."},
		{"long", strings.Repeat("b", 5000), strings.Repeat("b", 1021) + "..."},
		{"cut inside a character", strings.Repeat("a", 1020) + strings.Repeat("é", 10), strings.Repeat("a", 1020) + "..."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRecorder(Config{Events: newFakeEvents(), Component: "agent"})
			r.Record(testPod(), Warning, "Failed", "%s", tt.msg)
			e := <-r.queue
			if e.Message != tt.want {
				t.Errorf("message of %d bytes ending %q, want %d bytes ending %q", len(e.Message), tail(e.Message), len(tt.want), tail(tt.want))
			}
			if !utf8.ValidString(e.Message) {
				t.Errorf("message is not valid UTF-8")
			}
			if _, err := proto.Marshal(e); err != nil {
				t.Errorf("the event cannot be sent: %v", err)
			}
		})
	}
}

func tail(s string) string { return s[max(len(s)-8, 0):] }

// TestName: repeats of an event share a name, so that they meet in one
// object; anything that tells events apart gives another name.
func TestName(t *testing.T) {
	record := func(r *Recorder, obj *skiffv1.Pod, typ, reason, msg string) *skiffv1.Event {
		r.Record(obj, typ, reason, "%s", msg)
		return <-r.queue
	}
	clock := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	r := NewRecorder(Config{Events: newFakeEvents(), Component: "agent", Host: "n1", Now: func() time.Time { return clock }})
	base := record(r, testPod(), Normal, "Started", "Started container c")
	if !strings.HasPrefix(base.Metadata.Name, "p.") {
		t.Errorf("name %q, want the object's name first", base.Metadata.Name)
	}
	clock = clock.Add(time.Hour)
	if again := record(r, testPod(), Normal, "Started", "Started container c"); again.Metadata.Name != base.Metadata.Name {
		t.Errorf("the same event an hour later is named %q, first %q", again.Metadata.Name, base.Metadata.Name)
	}
	recreated := testPod()
	recreated.Metadata.Uid = "u2"
	other := NewRecorder(Config{Events: newFakeEvents(), Component: "agent", Host: "n2"})
	for name, e := range map[string]*skiffv1.Event{
		"another message":        record(r, testPod(), Normal, "Started", "Started container d"),
		"another reason":         record(r, testPod(), Normal, "Created", "Started container c"),
		"another type":           record(r, testPod(), Warning, "Started", "Started container c"),
		"a new pod of that name": record(r, recreated, Normal, "Started", "Started container c"),
		"another node":           record(other, testPod(), Normal, "Started", "Started container c"),
	} {
		if e.Metadata.Name == base.Metadata.Name {
			t.Errorf("%s: same name %q", name, e.Metadata.Name)
		}
	}
}

// TestFullQueueDrops: with nothing writing, Record does not block; what
// does not fit is dropped and counted.
func TestFullQueueDrops(t *testing.T) {
	r := NewRecorder(Config{Events: newFakeEvents(), Component: "agent"})
	recorded := make(chan struct{})
	go func() {
		defer close(recorded)
		for i := range queueLength + 3 {
			r.Record(testPod(), Normal, "Pulled", "image %d", i)
		}
	}()
	select {
	case <-recorded:
	case <-time.After(5 * time.Second):
		t.Fatal("Record blocked on a full queue")
	}
	if len(r.queue) != queueLength || r.dropped.Load() != 3 {
		t.Errorf("%d queued, %d dropped; want %d queued, 3 dropped", len(r.queue), r.dropped.Load(), queueLength)
	}
	if e := <-r.queue; e.Message != "image 0" {
		t.Errorf("first queued %q, want the oldest report kept", e.Message)
	}
}

// TestClusterScopedObject: events about an object without a namespace go
// to the default namespace, as in Kubernetes.
func TestClusterScopedObject(t *testing.T) {
	r := NewRecorder(Config{Events: newFakeEvents(), Component: "controller"})
	r.Record(&skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: "n1", Uid: "nu"}}, Normal, "NodeReady", "Node n1 status is now: NodeReady")
	e := <-r.queue
	if e.Metadata.Namespace != "default" || e.InvolvedObject.Kind != "Node" || e.InvolvedObject.Namespace != "" {
		t.Errorf("event in %q about %s in %q, want in default about a Node in no namespace", e.Metadata.Namespace, e.InvolvedObject.Kind, e.InvolvedObject.Namespace)
	}
}
