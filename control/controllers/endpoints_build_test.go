package controllers

import (
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

func testPod(name, ip string, ready bool, ports ...*skiffv1.ContainerPort) *skiffv1.Pod {
	st := "False"
	if ready {
		st = "True"
	}
	return &skiffv1.Pod{
		Metadata: &skiffv1.ObjectMeta{Namespace: "default", Name: name, Uid: "uid-" + name, Labels: map[string]string{"app": "web"}},
		Spec:     &skiffv1.PodSpec{NodeName: "n1", Containers: []*skiffv1.Container{{Name: "c", Ports: ports}}},
		Status:   &skiffv1.PodStatus{Phase: "Running", PodIp: ip, Conditions: []*skiffv1.Condition{{Type: "Ready", Status: st}}},
	}
}

func addr(name, ip string) *skiffv1.EndpointAddress {
	return &skiffv1.EndpointAddress{Ip: ip, NodeName: "n1", TargetRef: &skiffv1.ObjectReference{Kind: "Pod", Namespace: "default", Name: name, Uid: "uid-" + name}}
}

func TestBuildEndpoints(t *testing.T) {
	web := func(ports ...*skiffv1.ServicePort) *skiffv1.Service {
		return &skiffv1.Service{
			Metadata: &skiffv1.ObjectMeta{Namespace: "default", Name: "web", Labels: map[string]string{"tier": "front"}},
			Spec:     &skiffv1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: ports},
		}
	}
	http := &skiffv1.ServicePort{Name: "http", Port: 80, TargetPort: "http", Protocol: "TCP"}
	metrics := &skiffv1.ServicePort{Name: "metrics", Port: 9090, TargetPort: "9100", Protocol: "TCP"}
	named := &skiffv1.ContainerPort{Name: "http", ContainerPort: 8080}
	terminating := testPod("gone", "10.244.0.9", true, named)
	terminating.Metadata.DeletionTimestamp = timestamppb.Now()
	other := testPod("other", "10.244.0.8", true, named)
	other.Metadata.Labels = map[string]string{"app": "db"}
	otherNS := testPod("elsewhere", "10.244.0.7", true, named)
	otherNS.Metadata.Namespace = "team"
	done := testPod("done", "10.244.0.6", true, named)
	done.Status.Phase = "Succeeded"
	udpNamed := testPod("udp", "10.244.0.12", true, &skiffv1.ContainerPort{Name: "http", ContainerPort: 53, Protocol: "UDP"})

	for _, tc := range []struct {
		name string
		svc  *skiffv1.Service
		pods []*skiffv1.Pod
		want []*skiffv1.EndpointSubset
	}{
		{
			name: "ready and not ready",
			svc:  web(&skiffv1.ServicePort{Port: 80, TargetPort: "8080", Protocol: "TCP"}),
			pods: []*skiffv1.Pod{testPod("b", "10.244.0.3", true), testPod("a", "10.244.0.2", true), testPod("c", "10.244.0.4", false), testPod("no-ip", "", true)},
			want: []*skiffv1.EndpointSubset{{
				Addresses:         []*skiffv1.EndpointAddress{addr("a", "10.244.0.2"), addr("b", "10.244.0.3")},
				NotReadyAddresses: []*skiffv1.EndpointAddress{addr("c", "10.244.0.4")},
				Ports:             []*skiffv1.EndpointPort{{Port: 8080, Protocol: "TCP"}},
			}},
		},
		{
			name: "left out: terminating, other labels, other namespace, finished",
			svc:  web(&skiffv1.ServicePort{Port: 80, TargetPort: "8080", Protocol: "TCP"}),
			pods: []*skiffv1.Pod{terminating, other, otherNS, done},
		},
		{
			name: "named target port: pods without it are left out of that port",
			svc:  web(http, metrics),
			pods: []*skiffv1.Pod{testPod("named", "10.244.0.2", true, named), testPod("plain", "10.244.0.3", true), udpNamed},
			want: []*skiffv1.EndpointSubset{
				{
					Addresses: []*skiffv1.EndpointAddress{addr("named", "10.244.0.2")},
					Ports:     []*skiffv1.EndpointPort{{Name: "http", Port: 8080, Protocol: "TCP"}, {Name: "metrics", Port: 9100, Protocol: "TCP"}},
				},
				{
					Addresses: []*skiffv1.EndpointAddress{addr("plain", "10.244.0.3"), addr("udp", "10.244.0.12")},
					Ports:     []*skiffv1.EndpointPort{{Name: "metrics", Port: 9100, Protocol: "TCP"}},
				},
			},
		},
		{
			name: "no pod has the named port",
			svc:  web(http),
			pods: []*skiffv1.Pod{testPod("plain", "10.244.0.3", true)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := BuildEndpoints(tc.svc, tc.pods)
			want := &skiffv1.Endpoints{
				Metadata: &skiffv1.ObjectMeta{Namespace: "default", Name: "web", Labels: map[string]string{"tier": "front", ManagedByLabel: ManagedBy}},
				Subsets:  tc.want,
			}
			if !proto.Equal(got, want) {
				t.Errorf("got\n%s\nwant\n%s", prototext.Format(got), prototext.Format(want))
			}
			// The same pods in another order build the same endpoints, and
			// compare equal to them shuffled.
			rev := make([]*skiffv1.Pod, len(tc.pods))
			for i, p := range tc.pods {
				rev[len(rev)-1-i] = p
			}
			again := BuildEndpoints(tc.svc, rev)
			if !proto.Equal(again, got) {
				t.Errorf("another order of pods built\n%s", prototext.Format(again))
			}
			if len(again.Subsets) > 1 {
				again.Subsets[0], again.Subsets[1] = again.Subsets[1], again.Subsets[0]
			}
			if !sameEndpoints(again, got) {
				t.Error("sameEndpoints: false for the same endpoints in another order")
			}
		})
	}
}

func TestSameEndpointsSeesChanges(t *testing.T) {
	svc := &skiffv1.Service{
		Metadata: &skiffv1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec:     &skiffv1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []*skiffv1.ServicePort{{Port: 80, TargetPort: "80", Protocol: "TCP"}}},
	}
	a := BuildEndpoints(svc, []*skiffv1.Pod{testPod("a", "10.244.0.2", true)})
	for name, b := range map[string]*skiffv1.Endpoints{
		"not ready": BuildEndpoints(svc, []*skiffv1.Pod{testPod("a", "10.244.0.2", false)}),
		"other ip":  BuildEndpoints(svc, []*skiffv1.Pod{testPod("a", "10.244.0.3", true)}),
		"none":      BuildEndpoints(svc, nil),
	} {
		if sameEndpoints(a, b) {
			t.Errorf("%s: sameEndpoints says nothing changed", name)
		}
	}
}
