package main

import (
	"bytes"
	"testing"
	"time"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

// fakeStream plays back watch events.
type fakeStream struct {
	evs []*skiffv1.PodWatchEvent
	cur *skiffv1.PodWatchEvent
}

func (f *fakeStream) Receive() bool {
	if len(f.evs) == 0 {
		return false
	}
	f.cur, f.evs = f.evs[0], f.evs[1:]
	return true
}
func (f *fakeStream) Event() (skiffv1.EventType, kinds.Object) { return f.cur.Type, f.cur.Object }
func (f *fakeStream) Err() error                               { return nil }
func (f *fakeStream) Close() error                             { return nil }

// TestGetWatchSkipsBookmarks: `get -w` prints a line per change and none
// for a bookmark, in every output format, and a bookmark first does not
// print the table's header.
func TestGetWatchSkipsBookmarks(t *testing.T) {
	bookmark := func(rv uint64) *skiffv1.PodWatchEvent {
		return &skiffv1.PodWatchEvent{Type: skiffv1.EventType_EVENT_TYPE_BOOKMARK, Object: &skiffv1.Pod{Metadata: &skiffv1.ObjectMeta{ResourceVersion: rv}}}
	}
	pod := func(typ skiffv1.EventType, name string, rv uint64) *skiffv1.PodWatchEvent {
		return &skiffv1.PodWatchEvent{Type: typ, Object: &skiffv1.Pod{
			Metadata: &skiffv1.ObjectMeta{Name: name, Namespace: "default", ResourceVersion: rv},
			Spec:     &skiffv1.PodSpec{Containers: []*skiffv1.Container{{Name: "c", Image: "hello"}}},
			Status:   &skiffv1.PodStatus{Phase: "Pending"},
		}}
	}
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		output string
		count  string // what each printed change shows once
		want   int    // how often it shows
	}{
		{"name", "pod/a\n", 2},
		{"json", `"name": "a"`, 2},
		{"", "\n", 3}, // the header and one row per change
	}
	for _, tt := range tests {
		t.Run("output="+tt.output, func(t *testing.T) {
			st := &fakeStream{evs: []*skiffv1.PodWatchEvent{
				bookmark(3),
				pod(skiffv1.EventType_EVENT_TYPE_ADDED, "a", 4),
				bookmark(7),
				bookmark(9),
				pod(skiffv1.EventType_EVENT_TYPE_MODIFIED, "a", 10),
				bookmark(12),
			}}
			var out bytes.Buffer
			p := &printer{w: &out, k: kinds.Pod, output: tt.output, now: func() time.Time { return now }}
			if err := p.follow(st); err != nil {
				t.Fatal(err)
			}
			got := out.String()
			if n := bytes.Count(out.Bytes(), []byte(tt.count)); n != tt.want {
				t.Errorf("%q printed %d times, want %d:\n%s", tt.count, n, tt.want, got)
			}
			if bytes.Contains(out.Bytes(), []byte(`"resourceVersion": "3"`)) || bytes.Contains(out.Bytes(), []byte("\n\n")) {
				t.Errorf("a bookmark was printed:\n%s", got)
			}
		})
	}
}
