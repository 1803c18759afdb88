package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

// TestMain fails the run if a goroutine outlives the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeEvents stores events as the apiserver does: Delete at a
// resourceVersion only removes the object still at that version. Safe for
// concurrent use.
type fakeEvents struct {
	skiffv1connect.EventServiceClient

	mu      sync.Mutex
	objs    map[string]*skiffv1.Event // by name; all in one namespace
	rv      uint64
	deletes []*skiffv1.DeleteRequest
	listErr error
	// afterList is called, locked, once List has taken its copy: what
	// happens to the store between the sweep's List and its Deletes.
	afterList func()
	// deleteErr fails the Delete of the named events.
	deleteErr map[string]error
}

func newFakeEvents() *fakeEvents { return &fakeEvents{objs: map[string]*skiffv1.Event{}} }

// add stores an event last seen at last (none when zero) and created at
// created.
func (f *fakeEvents) add(name string, created, last time.Time) {
	f.rv++
	e := &skiffv1.Event{
		Metadata: &skiffv1.ObjectMeta{Namespace: "default", Name: name, ResourceVersion: f.rv, CreationTimestamp: timestamppb.New(created)},
		Reason:   "Pulled", Type: "Normal", Count: 1, FirstTimestamp: timestamppb.New(created),
	}
	if !last.IsZero() {
		e.LastTimestamp = timestamppb.New(last)
	}
	f.objs[name] = e
}

// repeat records that the event happened again at t, as the recorder's
// Update does.
func (f *fakeEvents) repeat(name string, t time.Time) {
	e := f.objs[name]
	f.rv++
	e.Metadata.ResourceVersion = f.rv
	e.Count++
	e.LastTimestamp = timestamppb.New(t)
}

func (f *fakeEvents) List(_ context.Context, _ *connect.Request[skiffv1.ListRequest]) (*connect.Response[skiffv1.EventList], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listErr != nil {
		return nil, f.listErr
	}
	out := &skiffv1.EventList{ResourceVersion: f.rv}
	for _, e := range f.objs {
		out.Items = append(out.Items, proto.Clone(e).(*skiffv1.Event))
	}
	if f.afterList != nil {
		f.afterList()
	}
	return connect.NewResponse(out), nil
}

func (f *fakeEvents) Delete(_ context.Context, r *connect.Request[skiffv1.DeleteRequest]) (*connect.Response[skiffv1.Event], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deletes = append(f.deletes, proto.Clone(r.Msg).(*skiffv1.DeleteRequest))
	if err := f.deleteErr[r.Msg.Name]; err != nil {
		return nil, err
	}
	e, ok := f.objs[r.Msg.Name]
	if !ok || r.Msg.Namespace != e.Metadata.Namespace {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("events %q not found", r.Msg.Name))
	}
	if r.Msg.ResourceVersion != 0 && r.Msg.ResourceVersion != e.Metadata.ResourceVersion {
		return nil, connect.NewError(connect.CodeAborted, fmt.Errorf("events %q: resourceVersion %d, not %d", r.Msg.Name, e.Metadata.ResourceVersion, r.Msg.ResourceVersion))
	}
	delete(f.objs, r.Msg.Name)
	return connect.NewResponse(e), nil
}

func (f *fakeEvents) names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n := range f.objs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// TestEventTTLSweep: an event goes once it has not happened for the TTL,
// counted from its lastTimestamp (its creation when it has none); one that
// happened again after the sweep listed it stays, and so does the sweep.
func TestEventTTLSweep(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name        string
		ttl         time.Duration
		wantDeleted int
		wantKept    []string
	}{
		{
			name: "default TTL", ttl: 0, wantDeleted: 3,
			wantKept: []string{"created-recently", "fresh", "happened-again", "just-inside"},
		},
		{
			name: "an hour", ttl: time.Hour, wantDeleted: 3,
			wantKept: []string{"created-recently", "fresh", "happened-again", "just-inside"},
		},
		{
			name: "five minutes", ttl: 5 * time.Minute, wantDeleted: 5,
			wantKept: []string{"created-recently", "happened-again"},
		},
		{
			name: "a day", ttl: 24 * time.Hour, wantDeleted: 0,
			wantKept: []string{"at-the-cutoff", "created-long-ago", "created-recently", "fresh", "happened-again", "just-inside", "old"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeEvents()
			var none time.Time
			f.add("old", now.Add(-3*time.Hour), now.Add(-2*time.Hour))
			f.add("at-the-cutoff", now.Add(-3*time.Hour), now.Add(-time.Hour))
			f.add("just-inside", now.Add(-3*time.Hour), now.Add(-time.Hour+time.Second))
			f.add("fresh", now.Add(-3*time.Hour), now.Add(-10*time.Minute))
			f.add("created-long-ago", now.Add(-3*time.Hour), none)
			f.add("created-recently", now.Add(-time.Minute), none)
			f.add("happened-again", now.Add(-3*time.Hour), now.Add(-2*time.Hour))
			f.add("gone", now.Add(-3*time.Hour), now.Add(-2*time.Hour))
			listed := map[string]uint64{}
			for n, e := range f.objs {
				listed[n] = e.Metadata.ResourceVersion
			}
			f.afterList = func() {
				f.repeat("happened-again", now)
				delete(f.objs, "gone") // deleted by another sweeper
			}
			c := &EventTTL{Events: f, TTL: tt.ttl, Now: func() time.Time { return now }}

			n, err := c.Sweep(context.Background())
			if err != nil {
				t.Fatalf("sweep: %v", err)
			}
			if n != tt.wantDeleted {
				t.Errorf("sweep reports %d deleted, want %d", n, tt.wantDeleted)
			}
			if got := f.names(); !slices.Equal(got, tt.wantKept) {
				t.Errorf("events left %q, want %q", got, tt.wantKept)
			}
			for _, d := range f.deletes {
				if d.ResourceVersion != listed[d.Name] || d.Namespace != "default" {
					t.Errorf("deleted %s/%s at version %d, want default/%s at the listed %d", d.Namespace, d.Name, d.ResourceVersion, d.Name, listed[d.Name])
				}
			}
		})
	}
}

// TestEventTTLSweepErrors: a failure other than a lost race ends the sweep
// with an error and the count of what it did delete.
func TestEventTTLSweepErrors(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	unavailable := connect.NewError(connect.CodeUnavailable, errors.New("no leader"))

	f := newFakeEvents()
	f.listErr = unavailable
	c := &EventTTL{Events: f, Now: func() time.Time { return now }}
	if n, err := c.Sweep(context.Background()); connect.CodeOf(err) != connect.CodeUnavailable || n != 0 {
		t.Errorf("sweep with the list failing: %d, %v; want 0 and the list's error", n, err)
	}

	f = newFakeEvents()
	f.add("a", now.Add(-3*time.Hour), now.Add(-2*time.Hour))
	f.add("b", now.Add(-3*time.Hour), now.Add(-2*time.Hour))
	f.deleteErr = map[string]error{"b": unavailable}
	c = &EventTTL{Events: f, Now: func() time.Time { return now }}
	n, err := c.Sweep(context.Background())
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("sweep with a delete failing: %v, want the delete's error", err)
	}
	// Map order decides whether a went first.
	if got := f.names(); !slices.Contains(got, "b") || n != 2-len(got) {
		t.Errorf("sweep reports %d deleted and leaves %q; want b left and the count of the rest", n, got)
	}
}
