package controllers

import (
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

func TestGCState(t *testing.T) {
	obj := func(k *kinds.Kind, uid string, owners ...string) kinds.Object {
		o := k.New()
		m := &skiffv1.ObjectMeta{Name: "n-" + uid, Namespace: "default", Uid: uid}
		for _, u := range owners {
			m.OwnerReferences = append(m.OwnerReferences, &skiffv1.OwnerReference{ApiVersion: "v1", Kind: "Service", Name: "n-" + u, Uid: u})
		}
		o.ProtoReflect().Set(o.ProtoReflect().Descriptor().Fields().ByName("metadata"), protoValue(m))
		return o
	}
	type step struct {
		ch       kindChange
		orphaned []string // dependents orphaned by the cache and marked after the step
	}
	svc1, svc2 := obj(kinds.Service, "s1"), obj(kinds.Service, "s2")
	pod := obj(kinds.Pod, "p1", "s1", "s2")
	for _, tt := range []struct {
		name  string
		steps []step
	}{
		{"one of two owners deleted: kept", []step{
			{kindChange{kind: kinds.Service, replace: true, items: []kinds.Object{svc1, svc2}}, nil},
			{kindChange{kind: kinds.Pod, replace: true, items: []kinds.Object{pod}}, nil},
			{kindChange{kind: kinds.Service, typ: skiffv1.EventType_EVENT_TYPE_DELETED, obj: svc1}, nil},
		}},
		{"both deleted: orphaned", []step{
			{kindChange{kind: kinds.Service, replace: true, items: []kinds.Object{svc1, svc2}}, nil},
			{kindChange{kind: kinds.Pod, replace: true, items: []kinds.Object{pod}}, nil},
			{kindChange{kind: kinds.Service, typ: skiffv1.EventType_EVENT_TYPE_DELETED, obj: svc1}, nil},
			{kindChange{kind: kinds.Service, typ: skiffv1.EventType_EVENT_TYPE_DELETED, obj: svc2}, []string{"p1"}},
		}},
		{"owners missing from a new list: orphaned", []step{
			{kindChange{kind: kinds.Service, replace: true, items: []kinds.Object{svc1, svc2}}, nil},
			{kindChange{kind: kinds.Pod, replace: true, items: []kinds.Object{pod}}, nil},
			{kindChange{kind: kinds.Service, replace: true}, []string{"p1"}},
		}},
		{"dependent seen before its owners: orphaned until they come", []step{
			{kindChange{kind: kinds.Pod, typ: skiffv1.EventType_EVENT_TYPE_ADDED, obj: pod}, []string{"p1"}},
			{kindChange{kind: kinds.Service, typ: skiffv1.EventType_EVENT_TYPE_ADDED, obj: svc2}, nil},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := newGCState()
			for i, s := range tt.steps {
				st.apply(s.ch)
				var got []string
				for uid := range st.dirty {
					if g := st.objects[uid]; g != nil && st.orphaned(g) {
						got = append(got, uid)
					}
				}
				st.dirty = map[string]bool{}
				if len(got) != len(s.orphaned) || len(got) > 0 && got[0] != s.orphaned[0] {
					t.Errorf("step %d: orphaned dependents marked %v, want %v", i, got, s.orphaned)
				}
			}
		})
	}
}

func protoValue(m *skiffv1.ObjectMeta) protoreflect.Value {
	return protoreflect.ValueOfMessage(m.ProtoReflect())
}
