package apiserver

import (
	"context"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

func TestAddDefaultTolerations(t *testing.T) {
	def := func(key string, secs int64) *skiffv1.Toleration {
		return &skiffv1.Toleration{Key: key, Operator: "Exists", Effect: "NoExecute", TolerationSeconds: proto.Int64(secs)}
	}
	for _, tt := range []struct {
		name string
		have []*skiffv1.Toleration
		cfg  Tolerations
		want []*skiffv1.Toleration
	}{
		{"none: both, 5s", nil, Tolerations{}, []*skiffv1.Toleration{def(taintNotReady, 5), def(taintUnreachable, 5)}},
		{"server settings", nil, Tolerations{NotReadySeconds: proto.Int64(0), UnreachableSeconds: proto.Int64(300)},
			[]*skiffv1.Toleration{def(taintNotReady, 0), def(taintUnreachable, 300)}},
		{"its own unreachable kept", []*skiffv1.Toleration{{Key: taintUnreachable, Operator: "Exists", Effect: "NoExecute"}}, Tolerations{},
			[]*skiffv1.Toleration{{Key: taintUnreachable, Operator: "Exists", Effect: "NoExecute"}, def(taintNotReady, 5)}},
		{"tolerates everything", []*skiffv1.Toleration{{Operator: "Exists"}}, Tolerations{}, []*skiffv1.Toleration{{Operator: "Exists"}}},
		{"a NoSchedule toleration is not one of NoExecute", []*skiffv1.Toleration{{Key: taintNotReady, Operator: "Exists", Effect: "NoSchedule"}}, Tolerations{},
			[]*skiffv1.Toleration{{Key: taintNotReady, Operator: "Exists", Effect: "NoSchedule"}, def(taintNotReady, 5), def(taintUnreachable, 5)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := pod("p")
			p.Spec.Tolerations = tt.have
			addDefaultTolerations(p, tt.cfg)
			got := &skiffv1.PodSpec{Tolerations: p.Spec.Tolerations}
			if want := (&skiffv1.PodSpec{Tolerations: tt.want}); !proto.Equal(got, want) {
				t.Errorf("tolerations:\n%s\nwant\n%s", prototext.Format(got), prototext.Format(want))
			}
		})
	}
}

// TestDefaultTolerationsOnCreate: a pod created through the API carries
// the default tolerations, and an update of it as read is accepted (its
// spec did not change).
func TestDefaultTolerationsOnCreate(t *testing.T) {
	a := newAPI(t)
	created := a.create(t, pod("p"))
	if n := len(created.GetSpec().GetTolerations()); n != 2 {
		t.Fatalf("created pod has %d tolerations, want the 2 defaults: %v", n, created.GetSpec().GetTolerations())
	}
	created.Metadata.Labels = map[string]string{"a": "b"}
	if _, err := a.pods.Update(context.Background(), connect.NewRequest(created)); err != nil {
		t.Errorf("update of the pod as read: %v", err)
	}
	// The manifest sent again, without the tolerations the server added
	// (skiff apply), is no change of the spec.
	again := pod("p")
	again.Metadata.Labels = map[string]string{"a": "c"}
	res, err := a.pods.Update(context.Background(), connect.NewRequest(again))
	if err != nil {
		t.Fatalf("update with the manifest as first written: %v", err)
	}
	if n := len(res.Msg.GetSpec().GetTolerations()); n != 2 {
		t.Errorf("after the update the pod has %d tolerations, want the 2 defaults kept", n)
	}
	// A spec that does change is still refused.
	again.Spec.Tolerations = []*skiffv1.Toleration{{Key: "other", Operator: "Exists"}}
	if _, err := a.pods.Update(context.Background(), connect.NewRequest(again)); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("update adding a toleration: %v, want InvalidArgument", err)
	}
}
