package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

// TestAgentKilledPodsKeepRunning: with the runtime host in a process of
// its own (skiff cri), killing the agent with SIGKILL leaves every pod
// running (same container, still ticking), and the agent started again
// adopts it: the pod stays Running with the same container and no restart.
func TestAgentKilledPodsKeepRunning(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root: a node creates a network namespace per pod")
	}
	dir := t.TempDir()
	t.Cleanup(func() { unmountAll(t, filepath.Join(dir, "state")) })
	out := &syncWriter{w: new(bytes.Buffer)}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("output:\n%s", out.String())
		}
	})
	serverData := filepath.Join(dir, "server-data")
	addr := freeAddr(t)
	startProc(t, "server", out, "server", "--data-dir", serverData, "--listen", addr,
		"--client-config", filepath.Join(dir, "client.config"), "--log-level", "warn")
	admin := waitAdminConfig(t, serverData, 30*time.Second)
	nodeData, socket, state := filepath.Join(dir, "node-data"), filepath.Join(dir, "cri.sock"), filepath.Join(dir, "state")
	startProc(t, "cri", out, "cri", "--no-cni", "--data-dir", nodeData, "--state-dir", state, "--cri-socket", socket, "--log-level", "warn")
	agentArgs := []string{"agent", "--external-cri", "--no-cni", "--cri-socket", socket, "--data-dir", nodeData, "--state-dir", state,
		"--server", addr, "--token-file", filepath.Join(serverData, "server", "token"), "--node-name", "edge-r", "--log-level", "warn"}
	agent := startProc(t, "agent", out, agentArgs...)

	c := &cluster{t: t, server: addr, config: adminConfigPath(serverData), dataDir: nodeData, socket: socket}
	var nodes string
	eventually(t, 30*time.Second, func() bool { nodes, _ = c.skiff("get", "nodes"); return strings.Contains(nodes, "edge-r") },
		func() string { return "the agent did not register: " + nodes })
	c.mustSkiff("image", "import", "--data-dir", nodeData, "ticker", buildWasm(t, "testdata/ticker"))
	c.mustSkiff("apply", "-f", writeFile(t, "ticker.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ticker\nspec:\n  containers:\n  - name: ticker\n    image: ticker\n"))
	c.waitPhase("ticker", "Running")
	api, err := newClients(admin)
	if err != nil {
		t.Fatal(err)
	}
	pod := func() *skiffv1.Pod {
		res, err := api.pods.Get(context.Background(), connect.NewRequest(&skiffv1.GetRequest{Namespace: "default", Name: "ticker"}))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg
	}
	before := pod().GetStatus().GetContainerStatuses()[0]
	running := func() string {
		for _, ctr := range criContainers(t, socket) {
			if strings.HasPrefix(ctr, before.GetContainerId()) {
				return ctr
			}
		}
		return ""
	}
	logSize := func() int64 {
		var n int64
		_ = filepath.Walk(filepath.Join(nodeData, "node", "logs"), func(_ string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() {
				n += info.Size()
			}
			return nil
		})
		return n
	}

	agent.kill()
	if got := running(); !strings.HasSuffix(got, "CONTAINER_RUNNING") {
		t.Fatalf("after the agent was killed the container is %q, want it running", got)
	}
	size := logSize()
	eventually(t, 10*time.Second, func() bool { return logSize() > size },
		func() string { return "the container stopped ticking once the agent was killed" })

	restarted := time.Now()
	startProc(t, "agent-again", out, agentArgs...)
	var beat time.Time
	eventually(t, 30*time.Second, func() bool {
		beat = nodeHeartbeat(api, "edge-r")
		return beat.After(restarted)
	}, func() string { return fmt.Sprintf("the agent started again did not register: last heartbeat %v", beat) })
	// Registration comes before the agent lists its pods; its next
	// heartbeat comes after it has reconciled them with CRI.
	first := beat
	eventually(t, 30*time.Second, func() bool {
		beat = nodeHeartbeat(api, "edge-r")
		return beat.After(first)
	}, func() string { return fmt.Sprintf("the agent started again beat once only: last heartbeat %v", beat) })
	if got := running(); !strings.HasSuffix(got, "CONTAINER_RUNNING") {
		t.Errorf("after the agent's restart the container is %q, want it running still", got)
	}
	after := pod().GetStatus()
	cs := after.GetContainerStatuses()[0]
	if after.GetPhase() != "Running" || cs.GetContainerId() != before.GetContainerId() || cs.GetRestartCount() != 0 {
		t.Errorf("after the agent's restart: phase %s, container %s (was %s), restarts %d; want Running, the same container, none",
			after.GetPhase(), cs.GetContainerId(), before.GetContainerId(), cs.GetRestartCount())
	}
}

// nodeHeartbeat is the last heartbeat of a node's Ready condition; zero
// when there is none.
func nodeHeartbeat(api *clients, name string) time.Time {
	n, err := api.of(kinds.Node).Get(context.Background(), "", name)
	if err != nil {
		return time.Time{}
	}
	for _, c := range n.(*skiffv1.Node).GetStatus().GetConditions() {
		if c.GetType() == "Ready" && c.GetStatus() == "True" {
			return c.GetLastHeartbeatTime().AsTime()
		}
	}
	return time.Time{}
}
