package proxy

import (
	"reflect"
	"testing"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

func TestFromAPI(t *testing.T) {
	svc := func(ip string, ports ...*skiffv1.ServicePort) *skiffv1.Service {
		return &skiffv1.Service{Metadata: &skiffv1.ObjectMeta{Namespace: "default", Name: "web"}, Spec: &skiffv1.ServiceSpec{ClusterIp: ip, Ports: ports}}
	}
	addrs := func(ips ...string) []*skiffv1.EndpointAddress {
		var out []*skiffv1.EndpointAddress
		for _, ip := range ips {
			out = append(out, &skiffv1.EndpointAddress{Ip: ip})
		}
		return out
	}
	tests := []struct {
		name string
		svc  *skiffv1.Service
		eps  *skiffv1.Endpoints
		want *Service // nil: not proxied
	}{
		{
			name: "headless", svc: svc("None", &skiffv1.ServicePort{Port: 80}),
		},
		{
			name: "no endpoints yet", svc: svc("10.96.0.5", &skiffv1.ServicePort{Port: 80, NodePort: 30080}),
			want: &Service{Namespace: "default", Name: "web", ClusterIP: "10.96.0.5", Ports: []ServicePort{{Protocol: TCP, Port: 80, NodePort: 30080}}},
		},
		{
			name: "ready addresses only, per port by name and protocol",
			svc:  svc("10.96.0.5", &skiffv1.ServicePort{Name: "http", Port: 80}, &skiffv1.ServicePort{Name: "dns", Protocol: "UDP", Port: 53}),
			eps: &skiffv1.Endpoints{Subsets: []*skiffv1.EndpointSubset{
				{
					Addresses: addrs("10.244.1.2"), NotReadyAddresses: addrs("10.244.1.3"),
					Ports: []*skiffv1.EndpointPort{{Name: "http", Port: 8080, Protocol: "TCP"}, {Name: "dns", Port: 5353, Protocol: "UDP"}},
				},
				{
					// Another pod names its http port differently.
					Addresses: addrs("10.244.2.2"),
					Ports:     []*skiffv1.EndpointPort{{Name: "http", Port: 9090, Protocol: "TCP"}},
				},
			}},
			want: &Service{Namespace: "default", Name: "web", ClusterIP: "10.96.0.5", Ports: []ServicePort{
				{Name: "http", Protocol: TCP, Port: 80, Endpoints: []Endpoint{{IP: "10.244.1.2", Port: 8080}, {IP: "10.244.2.2", Port: 9090}}},
				{Name: "dns", Protocol: UDP, Port: 53, Endpoints: []Endpoint{{IP: "10.244.1.2", Port: 5353}}},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := FromAPI(tt.svc, tt.eps)
			if tt.want == nil {
				if ok {
					t.Errorf("proxied as %+v, want not proxied", got)
				}
				return
			}
			if !ok || !reflect.DeepEqual(got, *tt.want) {
				t.Errorf("got %+v (%v), want %+v", got, ok, *tt.want)
			}
		})
	}
}
