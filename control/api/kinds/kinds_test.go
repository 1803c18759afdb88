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
		{"deployments", Deployment}, {"deploy", Deployment}, {"Deployment", Deployment},
		{"replicasets", ReplicaSet}, {"rs", ReplicaSet}, {"replicaset", ReplicaSet},
	}
	for _, tt := range tests {
		if k, err := Lookup(tt.name); err != nil || k != tt.want {
			t.Errorf("Lookup(%q) = %v, %v; want %s", tt.name, k, err, tt.want.Kind)
		}
	}
	_, err := Lookup("widgets")
	if err == nil || err.Error() != `unknown kind "widgets": use one of deployments, endpoints, events, namespaces, nodes, pods, replicasets, services` {
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
	if _, err := ForManifest("apps/v1", "StatefulSet"); err == nil || !strings.Contains(err.Error(), `kind: unsupported value "StatefulSet": skiff accepts apps/v1 Deployment, apps/v1 ReplicaSet, v1 Endpoints, v1 Event, v1 Namespace, v1 Node, v1 Pod, v1 Service`) {
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

func TestIntOrPercent(t *testing.T) {
	tests := []struct {
		v       string
		total   int32
		roundUp bool
		want    int32
		err     bool
	}{
		{"", 10, true, 0, false},
		{"3", 10, false, 3, false},
		{"25%", 10, true, 3, false},
		{"25%", 10, false, 2, false},
		{"100%", 7, false, 7, false},
		{"0%", 7, true, 0, false},
		{"-1", 10, false, 0, true},
		{"x%", 10, false, 0, true},
		{"1.5", 10, false, 0, true},
	}
	for _, tt := range tests {
		got, err := IntOrPercent(tt.v, tt.total, tt.roundUp)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("IntOrPercent(%q, %d, %t) = %d, %v; want %d (error %t)", tt.v, tt.total, tt.roundUp, got, err, tt.want, tt.err)
		}
	}
}

func TestSelectorMatches(t *testing.T) {
	sel := &skiffv1.LabelSelector{
		MatchLabels: map[string]string{"app": "web"},
		MatchExpressions: []*skiffv1.LabelSelectorRequirement{
			{Key: "tier", Operator: "In", Values: []string{"a", "b"}},
			{Key: "canary", Operator: "DoesNotExist"},
		},
	}
	for _, tt := range []struct {
		labels map[string]string
		want   bool
	}{
		{map[string]string{"app": "web", "tier": "a"}, true},
		{map[string]string{"app": "web", "tier": "c"}, false},
		{map[string]string{"app": "web"}, false},
		{map[string]string{"app": "web", "tier": "b", "canary": "1"}, false},
		{map[string]string{"app": "db", "tier": "a"}, false},
	} {
		if got := SelectorMatches(sel, tt.labels); got != tt.want {
			t.Errorf("SelectorMatches(%v) = %t, want %t", tt.labels, got, tt.want)
		}
	}
	if got := LabelSelectorString(sel); got != "app=web,tier in (a,b),!canary" {
		t.Errorf("LabelSelectorString = %q", got)
	}
}
