package kinds

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

func TestLookup(t *testing.T) {
	tests := []struct {
		name string
		want *Kind
	}{
		{"pods", Pod}, {"pod", Pod}, {"po", Pod}, {"Pod", Pod}, {"PODS", Pod},
		{"nodes", Node}, {"no", Node},
		{"namespaces", Namespace}, {"ns", Namespace},
		{"events", Event}, {"ev", Event}, {"event", Event},
		{"services", Service}, {"svc", Service}, {"service", Service},
		{"endpoints", Endpoints}, {"ep", Endpoints},
	}
	for _, tt := range tests {
		if k, err := Lookup(tt.name); err != nil || k != tt.want {
			t.Errorf("Lookup(%q) = %v, %v; want %s", tt.name, k, err, tt.want.Kind)
		}
	}
	_, err := Lookup("widgets")
	if err == nil || err.Error() != `unknown kind "widgets": use one of endpoints, events, namespaces, nodes, pods, services` {
		t.Errorf("Lookup(widgets): %v", err)
	}
}

func TestForManifest(t *testing.T) {
	if k, err := ForManifest("v1", "Event"); err != nil || k != Event {
		t.Errorf("ForManifest(v1, Event) = %v, %v", k, err)
	}
	if _, err := ForManifest("apps/v1", "Pod"); err == nil || !strings.Contains(err.Error(), `apiVersion: unsupported value "apps/v1" for kind Pod: use "v1"`) {
		t.Errorf("wrong apiVersion: %v", err)
	}
	if _, err := ForManifest("apps/v1", "StatefulSet"); err == nil || !strings.Contains(err.Error(), `kind: unsupported value "StatefulSet": skiff accepts v1 Endpoints, v1 Event, v1 Namespace, v1 Node, v1 Pod, v1 Service`) {
		t.Errorf("unknown kind: %v", err)
	}
}

func TestOf(t *testing.T) {
	for _, k := range All() {
		if got, ok := Of(k.New()); !ok || got != k {
			t.Errorf("Of(%s) = %v %v", k.Kind, got, ok)
		}
		if k.Fields["metadata.name"] == nil || (k.Namespaced != (k.Fields["metadata.namespace"] != nil)) {
			t.Errorf("%s lacks the metadata field selectors: %v", k.Kind, k.FieldNames())
		}
	}
	if _, ok := Of(&skiffv1.PodList{}); ok {
		t.Error("a list is not a kind")
	}
}

func TestPodStatusColumn(t *testing.T) {
	p := func(phase, waiting string, deleting bool) *skiffv1.Pod {
		pod := &skiffv1.Pod{Metadata: &skiffv1.ObjectMeta{}, Status: &skiffv1.PodStatus{Phase: phase}}
		if waiting != "" {
			pod.Status.ContainerStatuses = []*skiffv1.ContainerStatus{{State: &skiffv1.ContainerState{Waiting: &skiffv1.ContainerStateWaiting{Reason: waiting}}}}
		}
		if deleting {
			pod.Metadata.DeletionTimestamp = timestamppb.New(time.Now())
		}
		return pod
	}
	tests := []struct {
		pod  *skiffv1.Pod
		want string
	}{
		{p("Running", "", false), "Running"},
		{p("Pending", "ContainerCreating", false), "Pending"},
		{p("Running", "CrashLoopBackOff", false), "CrashLoopBackOff"},
		{p("Succeeded", "", true), "Terminating"},
		{p("", "", false), "Unknown"},
	}
	for _, tt := range tests {
		if got := PodStatus(tt.pod); got != tt.want {
			t.Errorf("PodStatus(%v) = %q, want %q", tt.pod, got, tt.want)
		}
	}
}

func TestAge(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{
		-time.Second: "0s", 45 * time.Second: "45s", 3 * time.Minute: "3m", 5 * time.Hour: "5h", 72 * time.Hour: "3d",
	} {
		if got := Age(now.Add(-d), now); got != want {
			t.Errorf("Age(%s ago) = %q, want %q", d, got, want)
		}
	}
}
