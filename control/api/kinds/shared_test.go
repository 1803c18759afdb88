package kinds

import (
	"testing"

	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// TestWatchEvents: an event's message is built once per object and type and
// encoded once per codec; a message it did not build is not its to encode;
// it holds at most sharedEvents messages; a nil WatchEvents shares nothing.
func TestWatchEvents(t *testing.T) {
	var w WatchEvents
	builds := 0
	event := func(typ skiffv1.EventType, o Object) proto.Message {
		return w.event(typ, o, func() proto.Message {
			builds++
			return &skiffv1.PodWatchEvent{Type: typ, Object: o.(*skiffv1.Pod)}
		})
	}
	pod := &skiffv1.Pod{Metadata: &skiffv1.ObjectMeta{Name: "p", ResourceVersion: 7}}
	added := event(skiffv1.EventType_EVENT_TYPE_ADDED, pod)
	if again := event(skiffv1.EventType_EVENT_TYPE_ADDED, pod); again != added || builds != 1 {
		t.Errorf("the same event was built %d times", builds)
	}
	// Watches with different selectors see one store event as different types.
	deleted := event(skiffv1.EventType_EVENT_TYPE_DELETED, pod)
	if deleted == added || deleted.(*skiffv1.PodWatchEvent).Type != skiffv1.EventType_EVENT_TYPE_DELETED {
		t.Errorf("DELETED of the object shared ADDED's message: %v", deleted)
	}

	marshals := 0
	marshal := func(m proto.Message) ([]byte, error) { marshals++; return proto.Marshal(m) }
	for range 3 {
		data, shared, err := w.Encoding(added, "proto", marshal)
		if err != nil || !shared {
			t.Fatalf("Encoding of a shared event: shared %v, %v", shared, err)
		}
		var got skiffv1.PodWatchEvent
		if err := proto.Unmarshal(data, &got); err != nil || !proto.Equal(&got, added) {
			t.Fatalf("Encoding decodes to %v (%v), want %v", &got, err, added)
		}
	}
	if _, _, err := w.Encoding(added, "json", func(proto.Message) ([]byte, error) { marshals++; return []byte("{}"), nil }); err != nil {
		t.Fatal(err)
	}
	if marshals != 2 {
		t.Errorf("marshalled %d times for two codecs, want 2", marshals)
	}
	if _, shared, _ := w.Encoding(&skiffv1.PodWatchEvent{}, "proto", marshal); shared {
		t.Error("a message WatchEvents did not build was shared")
	}
	if _, shared, _ := w.Encoding("not a message", "proto", marshal); shared {
		t.Error("a non-message was shared")
	}

	for i := range sharedEvents {
		event(skiffv1.EventType_EVENT_TYPE_MODIFIED, &skiffv1.Pod{Metadata: &skiffv1.ObjectMeta{ResourceVersion: uint64(i)}})
	}
	if len(w.byObj) != sharedEvents || len(w.byMsg) != sharedEvents {
		t.Errorf("holds %d/%d messages, want the bound %d", len(w.byObj), len(w.byMsg), sharedEvents)
	}
	if _, shared, _ := w.Encoding(added, "proto", marshal); shared {
		t.Error("the oldest message was kept past the bound")
	}

	var none *WatchEvents
	if a, b := none.event(skiffv1.EventType_EVENT_TYPE_ADDED, pod, func() proto.Message { return &skiffv1.PodWatchEvent{} }),
		none.event(skiffv1.EventType_EVENT_TYPE_ADDED, pod, func() proto.Message { return &skiffv1.PodWatchEvent{} }); a == b {
		t.Error("a nil WatchEvents shared a message")
	}
	if _, shared, _ := none.Encoding(added, "proto", marshal); shared {
		t.Error("a nil WatchEvents shared an encoding")
	}
}
