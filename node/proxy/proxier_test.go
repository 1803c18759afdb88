package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"skiff.dev/skiff/netns/netnstest"
)

const clusterIP = "10.96.0.10"

func webService(eps ...Endpoint) Service {
	return Service{Namespace: "default", Name: "web", ClusterIP: clusterIP, Ports: []ServicePort{
		{Name: "http", Protocol: TCP, Port: 80, NodePort: 30080, Endpoints: eps},
	}}
}

func TestProxyServesClusterIPAndNodePort(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	// Rules of someone else's, which the proxy must leave alone.
	runIn(t, c.node, "iptables", "-t", "nat", "-A", "PREROUTING", "-s", "10.123.0.0/16", "-j", "RETURN")
	runIn(t, c.node, "iptables", "-t", "filter", "-A", "FORWARD", "-s", "10.123.0.0/16", "-j", "ACCEPT")
	before := iptablesSave(t, c.node)
	// Off, so that the pod-to-pod case shows the proxy turns it on.
	setSysctl(t, c.node, "net/bridge/bridge-nf-call-iptables", "0")

	p, err := New(Config{InNetNS: inNS(c.node), ServiceCIDR: "10.96.0.0/16"})
	must(t, "new proxier", err)
	t.Cleanup(func() { p.Cleanup(context.Background()) })
	ep1 := Endpoint{IP: c.podIPs["pod1"], Port: serverPort}
	ep2 := Endpoint{IP: c.podIPs["pod2"], Port: serverPort}
	must(t, "set service", p.SetService(webService(ep1, ep2)))
	must(t, "sync", p.Sync(ctx))

	svcAddr := addrPort(clusterIP, 80)
	t.Run("cluster IP spreads over both endpoints", func(t *testing.T) {
		got := map[string]int{}
		netnstest.Eventually(t, 20*time.Second, func() bool {
			name, err := dial(c.client, svcAddr)
			if err != nil {
				t.Fatalf("dial %s from the client: %v", svcAddr, err)
			}
			got[name]++
			return got["pod1"] > 0 && got["pod2"] > 0
		}, func() string { return fmt.Sprintf("answers from %v, want both pods", got) })
	})
	t.Run("node port answers on the node IP", func(t *testing.T) {
		got := seen(t, c.client, addrPort(nodeIP, 30080), 30)
		if got["pod1"] == 0 || got["pod2"] == 0 {
			t.Errorf("answers %v, want both pods", got)
		}
	})
	t.Run("a pod reaches the service, itself included", func(t *testing.T) {
		got := seen(t, c.pods["pod1"], svcAddr, 30)
		if got["pod1"] == 0 || got["pod2"] == 0 {
			t.Errorf("answers %v, want both pods (hairpin and same bridge)", got)
		}
	})
	t.Run("the service CIDR's unreachable route does not hide services", func(t *testing.T) {
		r, err := NewRoutes(RoutesConfig{InNetNS: inNS(c.node), NodeName: "node", ServiceCIDR: "10.96.0.0/16"})
		must(t, "new routes", err)
		must(t, "sync routes", r.Sync(ctx, map[string]NodeRoute{"node": {IP: nodeIP, PodCIDR: "10.99.1.0/24"}}))
		defer func() { must(t, "clean up routes", r.Cleanup(ctx)) }()
		for _, from := range []string{c.client, c.pods["pod2"], c.node} {
			if name, err := dial(from, svcAddr); err != nil {
				t.Errorf("dial %s from %s: %v", svcAddr, from, err)
			} else if name != "pod1" && name != "pod2" {
				t.Errorf("dial %s from %s: answer %q", svcAddr, from, name)
			}
		}
		unknown := addrPort("10.96.0.99", 80)
		for _, tt := range []struct {
			from string
			want error
		}{
			{c.client, syscall.EHOSTUNREACH},
			{c.pods["pod2"], syscall.EHOSTUNREACH},
			{c.node, syscall.ECONNREFUSED},
		} {
			if _, err := dial(tt.from, unknown); !errors.Is(err, tt.want) {
				t.Errorf("dial %s (no service) from %s: %v, want %v", unknown, tt.from, err, tt.want)
			}
		}
	})
	t.Run("a removed endpoint leaves the rotation", func(t *testing.T) {
		must(t, "set service", p.SetService(webService(ep2)))
		must(t, "sync", p.Sync(ctx))
		got := seen(t, c.client, svcAddr, 20)
		if got["pod1"] != 0 || got["pod2"] != 20 {
			t.Errorf("answers %v, want pod2 only", got)
		}
	})
	t.Run("no endpoints refuses the connection", func(t *testing.T) {
		must(t, "set service", p.SetService(webService()))
		must(t, "sync", p.Sync(ctx))
		for _, from := range []string{c.client, c.node} {
			_, err := dial(from, svcAddr)
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("dial %s from %s: %v, want connection refused", svcAddr, from, err)
			}
		}
		_, err := dial(c.client, addrPort(nodeIP, 30080))
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial the node port: %v, want connection refused", err)
		}
	})
	t.Run("cleanup leaves the tables as they were", func(t *testing.T) {
		must(t, "set service", p.SetService(webService(ep1, ep2)))
		must(t, "sync", p.Sync(ctx))
		must(t, "cleanup", p.Cleanup(ctx))
		must(t, "cleanup again (idempotent)", p.Cleanup(ctx))
		if got := strings.TrimSpace(runIn(t, c.node, "cat", "/proc/sys/net/bridge/bridge-nf-call-iptables")); got != "0" {
			t.Errorf("bridge-nf-call-iptables = %s after cleanup, want 0 as before", got)
		}
		if after := iptablesSave(t, c.node); after != before {
			t.Errorf("after cleanup:\n%s\nwant as before:\n%s", after, before)
		}
		if _, err := dial(c.client, svcAddr); err == nil {
			t.Errorf("dial %s after cleanup answered", svcAddr)
		}
	})
}

// TestProxyMovesUDPClientsOffRemovedEndpoints: a UDP client that keeps its
// socket reaches the remaining endpoint once its own is removed, although
// the removed one still answers (its conntrack entry is deleted).
func TestProxyMovesUDPClientsOffRemovedEndpoints(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	for name, path := range c.pods {
		serveUDP(t, path, name, 5353)
	}
	p, err := New(Config{InNetNS: inNS(c.node)})
	must(t, "new proxier", err)
	t.Cleanup(func() { p.Cleanup(context.Background()) })
	dns := func(pods ...string) Service {
		svc := Service{Namespace: "kube-system", Name: "dns", ClusterIP: "10.96.0.53", Ports: []ServicePort{{Name: "dns", Protocol: UDP, Port: 53}}}
		for _, pod := range pods {
			svc.Ports[0].Endpoints = append(svc.Ports[0].Endpoints, Endpoint{IP: c.podIPs[pod], Port: 5353})
		}
		return svc
	}
	must(t, "set service", p.SetService(dns("pod1")))
	must(t, "sync", p.Sync(ctx))
	client := newUDPClient(t, c.client, "10.96.0.53:53")
	if got, err := client.ask(); err != nil || got != "pod1" {
		t.Fatalf("ask = %q, %v; want pod1", got, err)
	}
	must(t, "set service", p.SetService(dns("pod2")))
	must(t, "sync", p.Sync(ctx))
	for range 3 {
		if got, err := client.ask(); err != nil || got != "pod2" {
			t.Fatalf("ask after pod1 left = %q, %v; want pod2", got, err)
		}
	}
}
