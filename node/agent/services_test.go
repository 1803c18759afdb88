package agent

import (
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

func TestServiceEnv(t *testing.T) {
	svc := func(name, ip string, ports ...*skiffv1.ServicePort) *skiffv1.Service {
		return &skiffv1.Service{Metadata: &skiffv1.ObjectMeta{Name: name}, Spec: &skiffv1.ServiceSpec{ClusterIp: ip, Ports: ports}}
	}
	got := serviceEnv([]*skiffv1.Service{
		svc("redis-primary", "10.96.0.11", &skiffv1.ServicePort{Port: 6379}),
		svc("headless", "None", &skiffv1.ServicePort{Port: 80}),
		svc("dns", "10.96.0.10", &skiffv1.ServicePort{Name: "dns-udp", Protocol: "UDP", Port: 53}, &skiffv1.ServicePort{Name: "metrics", Port: 9153}),
	})
	want := `DNS_SERVICE_HOST=10.96.0.10
DNS_SERVICE_PORT=53
DNS_SERVICE_PORT_DNS_UDP=53
DNS_SERVICE_PORT_METRICS=9153
DNS_PORT=udp://10.96.0.10:53
DNS_PORT_53_UDP=udp://10.96.0.10:53
DNS_PORT_53_UDP_PROTO=udp
DNS_PORT_53_UDP_PORT=53
DNS_PORT_53_UDP_ADDR=10.96.0.10
DNS_PORT_9153_TCP=tcp://10.96.0.10:9153
DNS_PORT_9153_TCP_PROTO=tcp
DNS_PORT_9153_TCP_PORT=9153
DNS_PORT_9153_TCP_ADDR=10.96.0.10
REDIS_PRIMARY_SERVICE_HOST=10.96.0.11
REDIS_PRIMARY_SERVICE_PORT=6379
REDIS_PRIMARY_PORT=tcp://10.96.0.11:6379
REDIS_PRIMARY_PORT_6379_TCP=tcp://10.96.0.11:6379
REDIS_PRIMARY_PORT_6379_TCP_PROTO=tcp
REDIS_PRIMARY_PORT_6379_TCP_PORT=6379
REDIS_PRIMARY_PORT_6379_TCP_ADDR=10.96.0.11`
	if s := kvString(got); s != want {
		t.Errorf("service env:\n%s\nwant:\n%s", s, want)
	}
}

// TestServiceEnvYieldsToPod: a variable the pod sets wins over a service's.
func TestServiceEnvYieldsToPod(t *testing.T) {
	services := []*runtimeapi.KeyValue{{Key: "WEB_SERVICE_HOST", Value: []byte("10.96.0.5")}, {Key: "WEB_SERVICE_PORT", Value: []byte("80")}}
	own := envs([]*skiffv1.EnvVar{{Name: "WEB_SERVICE_PORT", Value: "8080"}})
	if s := kvString(withServiceEnv(services, own)); s != "WEB_SERVICE_HOST=10.96.0.5\nWEB_SERVICE_PORT=8080" {
		t.Errorf("env %q, want the pod's WEB_SERVICE_PORT", s)
	}
}

func kvString(kvs []*runtimeapi.KeyValue) string {
	var lines []string
	for _, kv := range kvs {
		lines = append(lines, kv.Key+"="+string(kv.Value))
	}
	return strings.Join(lines, "\n")
}
