package apiserver

import (
	"strings"
	"testing"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// TestPortsAndProbesValidated: ports and HTTP and TCP probes are accepted;
// bad values are refused naming the field and why, and exec probes are
// refused because a Wasm container cannot run a command.
func TestPortsAndProbesValidated(t *testing.T) {
	pod := func(edit func(*skiffv1.Container)) *skiffv1.Pod {
		c := &skiffv1.Container{Name: "c", Image: "hello", Ports: []*skiffv1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: "TCP"}}}
		edit(c)
		return &skiffv1.Pod{Metadata: &skiffv1.ObjectMeta{Name: "p", Namespace: "default"}, Spec: &skiffv1.PodSpec{RestartPolicy: "Always", Containers: []*skiffv1.Container{c}}}
	}
	httpProbe := func() *skiffv1.Probe {
		return &skiffv1.Probe{HttpGet: &skiffv1.HTTPGetAction{Path: "/healthz", Port: "http"}, PeriodSeconds: 5, FailureThreshold: 3}
	}
	valid := pod(func(c *skiffv1.Container) {
		c.ReadinessProbe = httpProbe()
		c.ReadinessProbe.SuccessThreshold = 2
		c.LivenessProbe = &skiffv1.Probe{TcpSocket: &skiffv1.TCPSocketAction{Port: "8080"}, InitialDelaySeconds: 3}
		c.StartupProbe = &skiffv1.Probe{HttpGet: &skiffv1.HTTPGetAction{Port: "8080", Host: "127.0.0.1", Scheme: "HTTPS"}, SuccessThreshold: 1}
	})
	if fe := validatePod(valid); len(fe) != 0 {
		t.Fatalf("a pod with ports and probes: %v", fe)
	}
	for _, tt := range []struct {
		name, want string
		edit       func(*skiffv1.Container)
	}{
		{"port out of range", "spec.containers[0].ports[1].containerPort: invalid value 70000", func(c *skiffv1.Container) {
			c.Ports = append(c.Ports, &skiffv1.ContainerPort{ContainerPort: 70000})
		}},
		{"bad port name", `spec.containers[0].ports[1].name: invalid value "HTTP_2"`, func(c *skiffv1.Container) {
			c.Ports = append(c.Ports, &skiffv1.ContainerPort{Name: "HTTP_2", ContainerPort: 81})
		}},
		{"duplicate port name", `spec.containers[0].ports[1].name: duplicate value "http"`, func(c *skiffv1.Container) {
			c.Ports = append(c.Ports, &skiffv1.ContainerPort{Name: "http", ContainerPort: 81})
		}},
		{"bad protocol", `spec.containers[0].ports[0].protocol: unsupported value "QUIC"`, func(c *skiffv1.Container) { c.Ports[0].Protocol = "QUIC" }},
		{"exec probe", "spec.containers[0].livenessProbe.exec: not supported: a Wasm container cannot run a command", func(c *skiffv1.Container) {
			c.LivenessProbe = &skiffv1.Probe{Exec: &skiffv1.ExecAction{Command: []string{"true"}}}
		}},
		{"no action", "spec.containers[0].readinessProbe: must have exactly one of httpGet, tcpSocket", func(c *skiffv1.Container) {
			c.ReadinessProbe = &skiffv1.Probe{PeriodSeconds: 1}
		}},
		{"two actions", "spec.containers[0].readinessProbe: may not have more than one", func(c *skiffv1.Container) {
			c.ReadinessProbe = httpProbe()
			c.ReadinessProbe.TcpSocket = &skiffv1.TCPSocketAction{Port: "80"}
		}},
		{"unknown port name", `spec.containers[0].startupProbe.tcpSocket.port: invalid value "grpc": must be a port number or the name of one of the container's ports`, func(c *skiffv1.Container) {
			c.StartupProbe = &skiffv1.Probe{TcpSocket: &skiffv1.TCPSocketAction{Port: "grpc"}}
		}},
		{"port number out of range", "spec.containers[0].livenessProbe.httpGet.port: invalid value 0", func(c *skiffv1.Container) {
			c.LivenessProbe = httpProbe()
			c.LivenessProbe.HttpGet.Port = "0"
		}},
		{"host name", `spec.containers[0].livenessProbe.httpGet.host: invalid value "example.com": must be an IP address`, func(c *skiffv1.Container) {
			c.LivenessProbe = httpProbe()
			c.LivenessProbe.HttpGet.Host = "example.com"
		}},
		{"scheme", `spec.containers[0].livenessProbe.httpGet.scheme: unsupported value "FTP"`, func(c *skiffv1.Container) {
			c.LivenessProbe = httpProbe()
			c.LivenessProbe.HttpGet.Scheme = "FTP"
		}},
		{"path", `spec.containers[0].livenessProbe.httpGet.path: invalid value "healthz"`, func(c *skiffv1.Container) {
			c.LivenessProbe = httpProbe()
			c.LivenessProbe.HttpGet.Path = "healthz"
		}},
		{"negative period", "spec.containers[0].readinessProbe.periodSeconds: invalid value -1: must not be negative", func(c *skiffv1.Container) {
			c.ReadinessProbe = httpProbe()
			c.ReadinessProbe.PeriodSeconds = -1
		}},
		{"liveness success threshold", "spec.containers[0].livenessProbe.successThreshold: invalid value 2: must be 1", func(c *skiffv1.Container) {
			c.LivenessProbe = httpProbe()
			c.LivenessProbe.SuccessThreshold = 2
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := validatePod(pod(tt.edit)).err("pod", "p")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("validate: %v, want %q", err, tt.want)
			}
		})
	}
}

// TestInitContainersValidated: init containers are accepted; names shared
// with a container, a missing image and probes are refused by field.
func TestInitContainersValidated(t *testing.T) {
	pod := func(inits ...*skiffv1.Container) *skiffv1.Pod {
		return &skiffv1.Pod{Metadata: &skiffv1.ObjectMeta{Name: "p", Namespace: "default"}, Spec: &skiffv1.PodSpec{
			RestartPolicy: "Never", InitContainers: inits, Containers: []*skiffv1.Container{{Name: "c", Image: "hello"}},
		}}
	}
	if fe := validatePod(pod(&skiffv1.Container{Name: "setup", Image: "hello", Args: []string{"migrate"}})); len(fe) != 0 {
		t.Fatalf("a pod with an init container: %v", fe)
	}
	for _, tt := range []struct {
		name, want string
		init       *skiffv1.Container
	}{
		{"name of a container", `spec.initContainers[0].name: duplicate value "c"`, &skiffv1.Container{Name: "c", Image: "hello"}},
		{"no image", "spec.initContainers[0].image: required value", &skiffv1.Container{Name: "i"}},
		{"bad name", "spec.initContainers[0].name", &skiffv1.Container{Name: "I_1", Image: "hello"}},
		{"probe", "spec.initContainers[0].readinessProbe: must not be set for init containers", &skiffv1.Container{Name: "i", Image: "hello",
			ReadinessProbe: &skiffv1.Probe{TcpSocket: &skiffv1.TCPSocketAction{Port: "80"}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := validatePod(pod(tt.init)).err("pod", "p")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("validate: %v, want %q", err, tt.want)
			}
		})
	}
}
