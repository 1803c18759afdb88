package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"skiff.dev/skiff/control/cluster/pki"
)

// runSkiff runs a long-running command (server, agent) until ctx ends; the
// returned channel yields what it returned.
func runSkiff(ctx context.Context, logs *syncWriter, args ...string) <-chan error {
	root := newRoot()
	root.SetOut(logs)
	root.SetErr(logs)
	root.SetArgs(args)
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	return done
}

// freeAddr returns a loopback address no one listens on now.
func freeAddr(t *testing.T) string { return freeHostAddr(t, "127.0.0.1", false) }

// TestServerAndAgentApart runs `skiff agent` and `skiff server` as the two
// components they are, the agent first: it waits for its server (to trade
// the join token they share for its certificate), registers and runs the
// pods bound to it.
func TestServerAndAgentApart(t *testing.T) {
	dir := t.TempDir()
	serverData := filepath.Join(dir, "server-data")
	c := &cluster{t: t, server: freeAddr(t), config: adminConfigPath(serverData), dataDir: filepath.Join(dir, "node-data"), socket: filepath.Join(dir, "cri.sock")}
	if !isRoot() {
		t.Skip("needs root: a node creates a network namespace per pod")
	}
	t.Cleanup(func() { unmountAll(t, filepath.Join(dir, "state")) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncWriter{w: &bytes.Buffer{}}
	token := pki.NewToken()
	agentDone := runSkiff(ctx, logs, "--server", c.server, "--config", c.config, "agent", "--token", token, "--data-dir", c.dataDir,
		"--state-dir", filepath.Join(dir, "state"), "--no-cni", "--cri-socket", c.socket, "--node-name", "edge-1", "--log-level", "warn")
	eventually(t, 10*time.Second, func() bool { return strings.Contains(logs.String(), "get the node's certificate; will retry") },
		func() string { return "the agent did not wait for its server:\n" + logs.String() })
	serverDone := runSkiff(ctx, logs, "server", "--data-dir", serverData, "--listen", c.server, "--token", token,
		"--client-config", filepath.Join(dir, "client.config"), "--log-level", "warn")
	waitAdminConfig(t, serverData, 20*time.Second)

	var nodes string
	eventually(t, 20*time.Second, func() bool { nodes, _ = c.skiff("get", "nodes"); return strings.Contains(nodes, "edge-1") },
		func() string { return "get nodes: " + nodes + "\n" + logs.String() })
	c.mustSkiff("image", "import", "--data-dir", c.dataDir, "hello", buildWasm(t, "../../examples/hello"))
	c.mustSkiff("apply", "-f", "../../examples/hello/pod.yaml")
	if p := c.waitPhase("hello", "Succeeded", "Failed"); p.Status.Phase != "Succeeded" || p.Spec.NodeName != "edge-1" {
		t.Errorf("hello is %s on %q", p.Status.Phase, p.Spec.NodeName)
	}
	if out := c.mustSkiff("logs", "hello"); !strings.Contains(out, "Hello, skiff!") {
		t.Errorf("logs: %q", out)
	}
	c.mustSkiff("delete", "pod", "hello")
	c.waitSandboxes(0)

	cancel()
	for name, done := range map[string]<-chan error{"agent": agentDone, "server": serverDone} {
		if err := <-done; err != nil {
			t.Errorf("skiff %s returned %v when stopped, want nil", name, err)
		}
	}
}

// TestComponentErrors: a component that cannot run says why and returns;
// no error is dropped.
func TestComponentErrors(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"the API's port is taken", []string{"server", "--data-dir", t.TempDir(), "--listen", taken.Addr().String()},
			"listen for the API on " + taken.Addr().String()},
		{"a listen address without a port", []string{"server", "--data-dir", t.TempDir(), "--listen", "localhost"}, `listen address "localhost"`},
		{"a Raft address without a port", []string{"server", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--raft-listen", "localhost"}, `raft listen address "localhost"`},
		{"a negative event TTL", []string{"server", "--data-dir", t.TempDir(), "--event-ttl", "-1m"}, "--event-ttl: invalid value -1m0s: must be positive"},
		{"a negative dead-server time", []string{"server", "--data-dir", t.TempDir(), "--dead-server-after", "-1m"}, "--dead-server-after: invalid value -1m0s: must be positive"},
		{"a negative bootstrap-expect", []string{"server", "--data-dir", t.TempDir(), "--bootstrap-expect", "-1"}, "--bootstrap-expect: invalid value -1: must be 0 or more"},
		{"a cluster without gossip", []string{"server", "--data-dir", t.TempDir(), "--bootstrap-expect", "3"}, "--gossip-listen: required with --bootstrap-expect 2 or more"},
		{"a bad log level", []string{"server", "--log-level", "loud"}, "--log-level"},
		{"a service CIDR that is no CIDR", []string{"server", "--data-dir", t.TempDir(), "--service-cidr", "10.96.0.0"}, `--service-cidr: invalid value "10.96.0.0": must be a CIDR`},
		{"a cluster CIDR with host bits", []string{"server", "--data-dir", t.TempDir(), "--cluster-cidr", "10.244.1.0/16"}, `--cluster-cidr: invalid value "10.244.1.0/16": has host bits set; did you mean 10.244.0.0/16?`},
		{"overlapping CIDRs", []string{"server", "--data-dir", t.TempDir(), "--service-cidr", "10.244.128.0/24"}, "--service-cidr 10.244.128.0/24 overlaps cluster-cidr 10.244.0.0/16"},
		{"a node mask no longer than the cluster's", []string{"server", "--data-dir", t.TempDir(), "--node-cidr-mask-size", "12"}, "--node-cidr-mask-size 12: must be longer than cluster-cidr's /16"},
		{"a negative toleration", []string{"server", "--data-dir", t.TempDir(), "--default-unreachable-toleration-seconds", "-1"}, "--default-unreachable-toleration-seconds: invalid value -1: must not be negative"},
		{"a negative node grace", []string{"server", "--data-dir", t.TempDir(), "--node-monitor-grace-period", "-1s"}, "--node-monitor-grace-period: invalid value -1s: must be positive"},
		{"a bad node port range", []string{"server", "--data-dir", t.TempDir(), "--service-node-port-range", "30000"}, `--service-node-port-range: invalid port range "30000"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			clientConfig := filepath.Join(t.TempDir(), "client.config")
			err := <-runSkiff(ctx, &syncWriter{w: &bytes.Buffer{}}, append(tt.args, "--client-config", clientConfig)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("skiff %s: %v, want an error with %q", strings.Join(tt.args, " "), err, tt.want)
			}
			// Nothing half-done: a server that cannot run leaves no store,
			// and writes no client config.
			if _, err := os.Stat(clientConfig); !os.IsNotExist(err) {
				t.Errorf("skiff %s wrote a client config (stat: %v)", strings.Join(tt.args, " "), err)
			}
			for i, a := range tt.args {
				if a == "--data-dir" {
					if entries, _ := os.ReadDir(tt.args[i+1]); len(entries) > 0 {
						t.Errorf("skiff %s left %s behind", strings.Join(tt.args, " "), entries[0].Name())
					}
				}
			}
		})
	}
}

func isRoot() bool { return os.Geteuid() == 0 }

// TestAgentFindsItsServerByGossip runs a server with gossip and an agent
// that knows only the gossip address: the agent finds the server in the
// pool, registers and runs pods; `skiff members` shows both, and the agent
// as left once it stops.
func TestAgentFindsItsServerByGossip(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root: a node creates a network namespace per pod")
	}
	dir := t.TempDir()
	t.Cleanup(func() { unmountAll(t, filepath.Join(dir, "state")) })
	serverData := filepath.Join(dir, "server-data")
	c := &cluster{t: t, server: freeAddr(t), config: adminConfigPath(serverData), dataDir: filepath.Join(dir, "node-data"), socket: filepath.Join(dir, "cri.sock")}
	gossip := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncWriter{w: &bytes.Buffer{}}
	token := pki.NewToken()
	serverDone := runSkiff(ctx, logs, "server", "--data-dir", serverData, "--listen", c.server, "--token", token,
		"--gossip-listen", gossip, "--client-config", filepath.Join(dir, "client.config"), "--log-level", "warn")
	waitAdminConfig(t, serverData, 20*time.Second)
	eventually(t, 20*time.Second, func() bool { _, err := c.skiff("get", "nodes"); return err == nil },
		func() string { return "the server did not come up:\n" + logs.String() })

	agentCtx, stopAgent := context.WithCancel(ctx)
	defer stopAgent()
	agentDone := runSkiff(agentCtx, logs, "--config", c.config, "agent", "--join", gossip, "--token", token, "--data-dir", c.dataDir,
		"--state-dir", filepath.Join(dir, "state"), "--no-cni", "--cri-socket", c.socket, "--node-name", "edge-2", "--log-level", "warn")
	var members string
	eventually(t, 20*time.Second, func() bool {
		members, _ = c.skiff("members")
		return strings.Contains(members, "edge-2") && strings.Contains(members, "leader")
	}, func() string { return "skiff members:\n" + members + "\n" + logs.String() })
	for _, want := range []string{"server   leader", "edge-2", "agent", "alive", c.server} {
		if !strings.Contains(members, want) {
			t.Errorf("skiff members lacks %q:\n%s", want, members)
		}
	}
	c.mustSkiff("image", "import", "--data-dir", c.dataDir, "hello", buildWasm(t, "../../examples/hello"))
	c.mustSkiff("apply", "-f", "../../examples/hello/pod.yaml")
	if p := c.waitPhase("hello", "Succeeded", "Failed"); p.Status.Phase != "Succeeded" || p.Spec.NodeName != "edge-2" {
		t.Errorf("hello is %s on %q", p.Status.Phase, p.Spec.NodeName)
	}
	c.mustSkiff("delete", "pod", "hello")
	c.waitSandboxes(0)

	stopAgent()
	if err := <-agentDone; err != nil {
		t.Errorf("skiff agent returned %v when stopped", err)
	}
	eventually(t, 20*time.Second, func() bool {
		members, _ = c.skiff("members")
		return strings.Contains(members, "left")
	}, func() string { return "after the agent stopped, skiff members:\n" + members })
	cancel()
	if err := <-serverDone; err != nil {
		t.Errorf("skiff server returned %v when stopped", err)
	}

	// --server and --join together are refused.
	err := <-runSkiff(context.Background(), logs, "--server", c.server, "--config", c.config, "agent", "--join", gossip, "--token", token)
	if err == nil || !strings.Contains(err.Error(), "--server and --join: give one") {
		t.Errorf("agent --server --join: %v", err)
	}
}
