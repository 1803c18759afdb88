package cri

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/netns"
)

func TestHostPortsChecked(t *testing.T) {
	for _, tc := range []struct {
		pm   []*runtime.PortMapping
		part string
	}{
		{[]*runtime.PortMapping{{Protocol: runtime.Protocol_UDP, ContainerPort: 53, HostPort: 5353}}, "config.port_mappings[0].protocol"},
		{[]*runtime.PortMapping{{ContainerPort: 80, HostPort: 70000}}, "config.port_mappings[0].host_port"},
		{[]*runtime.PortMapping{{ContainerPort: 0, HostPort: 8080}}, "config.port_mappings[0].container_port"},
		{[]*runtime.PortMapping{{ContainerPort: 80, HostPort: 8080, HostIp: "localhost"}}, "config.port_mappings[0].host_ip"},
		{[]*runtime.PortMapping{{ContainerPort: 80, HostPort: 8080}, {ContainerPort: 81, HostPort: 8080}}, "config.port_mappings[1].host_port"},
	} {
		if _, err := hostPorts(&runtime.PodSandboxConfig{PortMappings: tc.pm}, false); !errors.Is(err, errInvalidArgument) || !strings.Contains(err.Error(), tc.part) {
			t.Errorf("%v: %v, want an invalid argument naming %s", tc.pm, err, tc.part)
		}
	}
	// No host port, or the node's network: nothing to relay.
	got, err := hostPorts(&runtime.PodSandboxConfig{PortMappings: []*runtime.PortMapping{{ContainerPort: 80}}}, false)
	if err != nil || len(got) != 0 {
		t.Errorf("a container port alone: %v, %v", got, err)
	}
	got, err = hostPorts(&runtime.PodSandboxConfig{PortMappings: []*runtime.PortMapping{{ContainerPort: 80, HostPort: 8080}}}, true)
	if err != nil || len(got) != 0 {
		t.Errorf("a host port on the node's network: %v, %v", got, err)
	}
}

// TestHostPortRelay: a sandbox's host port on 127.0.0.1 reaches the port
// its container listens on in the sandbox's network namespace, until the
// sandbox stops.
func TestHostPortRelay(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: creating a network namespace needs root")
	}
	e := newEnv(t, true)
	ctx := context.Background()
	hostPort := freePort(t)
	cfg := podConfig("web", "")
	cfg.PortMappings = []*runtime.PortMapping{{ContainerPort: 8080, HostPort: int32(hostPort), HostIp: "127.0.0.1"}}
	res, err := e.rs.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	e.svc.mu.RLock()
	path := e.svc.sandboxes[res.PodSandboxId].rec.NetNSPath
	e.svc.mu.RUnlock()
	f, err := netns.ListenTCP(path, 8080)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "inside the sandbox\n")
			c.Close()
		}
	}()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(hostPort))
	for range 3 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != "inside the sandbox\n" {
			t.Fatalf("host port %d answered %q", hostPort, b)
		}
	}
	if _, err := e.rs.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: res.PodSandboxId}); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("host port %d still accepts after the sandbox stopped", hostPort)
	}
	// A host port taken fails the sandbox, leaving nothing behind.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg = podConfig("clash", "")
	cfg.PortMappings = []*runtime.PortMapping{{ContainerPort: 80, HostPort: int32(busy.Addr().(*net.TCPAddr).Port), HostIp: "127.0.0.1"}}
	before := e.ns.(hostNamespaces)
	pins, _ := before.List()
	if _, err := e.rs.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: cfg}); err == nil || !strings.Contains(err.Error(), "host port") {
		t.Errorf("a sandbox on a taken host port: %v", err)
	}
	if after, _ := before.List(); len(after) != len(pins) {
		t.Errorf("the failed sandbox left network namespaces: %v, before %v", after, pins)
	}
}
