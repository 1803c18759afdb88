package main

import (
	"strings"
	"testing"
	"time"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

func TestDescribeService(t *testing.T) {
	s := &skiffv1.Service{
		Metadata: &skiffv1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: &skiffv1.ServiceSpec{
			Type: "NodePort", Selector: map[string]string{"app": "web"}, ClusterIp: "10.96.0.10",
			Ports: []*skiffv1.ServicePort{
				{Name: "http", Port: 80, TargetPort: "http", Protocol: "TCP", NodePort: 30080},
				{Name: "dns", Port: 53, TargetPort: "53", Protocol: "UDP", NodePort: 30053},
			},
		},
	}
	ep := &skiffv1.Endpoints{Subsets: []*skiffv1.EndpointSubset{{
		Addresses:         []*skiffv1.EndpointAddress{{Ip: "10.244.0.2"}, {Ip: "10.244.1.3"}},
		NotReadyAddresses: []*skiffv1.EndpointAddress{{Ip: "10.244.0.9"}},
		Ports:             []*skiffv1.EndpointPort{{Name: "http", Port: 8080, Protocol: "TCP"}},
	}}}
	var b strings.Builder
	if err := describe(&b, kinds.Service, s, ep, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"Type:        NodePort", "Selector:    app=web", "IP:          10.96.0.10",
		"Port:        http  80/TCP", "TargetPort:  http/TCP", "NodePort:    http  30080/TCP", "Endpoints:   10.244.0.2:8080,10.244.1.3:8080",
		"Port:        dns  53/UDP", "Endpoints:   <none>",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("describe service lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "10.244.0.9") {
		t.Errorf("describe service lists a not-ready endpoint:\n%s", out)
	}
}
