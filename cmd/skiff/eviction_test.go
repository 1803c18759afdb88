package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

// agentProc is `skiff agent` run as a process of its own, on directories
// that stay the same across restarts.
type agentProc struct {
	name, dataDir, stateDir, socket string
	args                            []string
	out                             *syncWriter
	p                               *proc
}

func startAgentProc(t *testing.T, dir, name, gossip, token string) *agentProc {
	t.Helper()
	a := &agentProc{name: name, dataDir: filepath.Join(dir, name, "data"), stateDir: filepath.Join(dir, name, "state"), socket: filepath.Join(dir, name, "cri.sock"), out: &syncWriter{w: new(bytes.Buffer)}}
	t.Cleanup(func() { unmountAll(t, a.stateDir) }) // registered first: runs after the kill
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent %s output:\n%s", name, a.out.String())
		}
	})
	a.args = []string{"agent", "--join", gossip, "--token", token, "--data-dir", a.dataDir, "--state-dir", a.stateDir, "--no-cni",
		"--cri-socket", a.socket, "--node-name", name, "--log-level", "info"}
	a.p = startProc(t, name, a.out, a.args...)
	return a
}

// TestNodeKilledPodsEvicted runs a server and two agents as processes of
// their own, gossiping on 127.0.0.1, and a ReplicaSet of three pods spread
// over both. It kills one agent with SIGKILL, as a crashing machine ends:
// its node is marked NotReady (Ready=Unknown, tainted unreachable) within
// seconds, its pods are evicted once their default toleration (5 s) runs
// out, and the ReplicaSet's replacements run on the other node. The
// killed agent then starts again: it stops and confirms the pods evicted
// while it was away, never running them again, and its node is Ready with
// no taint. The test logs the times from the kill.
func TestNodeKilledPodsEvicted(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root: a node creates a network namespace per pod")
	}
	dir := t.TempDir()
	serverData := filepath.Join(dir, "server")
	api, gossip := freeAddr(t), freeHostAddr(t, "127.0.0.1", true)
	srvOut := &syncWriter{w: new(bytes.Buffer)}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server output:\n%s", srvOut.String())
		}
	})
	startProc(t, "server", srvOut, "server", "--data-dir", serverData, "--listen", api, "--gossip-listen", gossip,
		"--client-config", filepath.Join(dir, "client.config"), "--log-level", "info")
	waitAdminConfig(t, serverData, 60*time.Second)
	raw, err := os.ReadFile(filepath.Join(serverData, "server", "token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(raw))
	c := &cluster{t: t, server: api, config: adminConfigPath(serverData)}
	cl := c.clients()
	nodes := skiffv1connect.NewNodeServiceClient(cl.hc, cl.base)

	agents := map[string]*agentProc{}
	for _, name := range []string{"edge-a", "edge-b"} {
		agents[name] = startAgentProc(t, dir, name, gossip, token)
	}
	ticker := buildWasm(t, "testdata/ticker")
	for _, a := range agents {
		c.mustSkiff("image", "import", "--data-dir", a.dataDir, "ticker", ticker)
	}
	var out string
	eventually(t, 60*time.Second, func() bool {
		out, _ = c.skiff("get", "nodes")
		return strings.Count(out, " Ready ") == 2
	}, func() string { return "the agents did not register Ready: skiff get nodes:\n" + out })

	c.mustSkiff("apply", "-f", writeFile(t, "ticker-rs.yaml", `apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: ticker
spec:
  replicas: 3
  selector:
    matchLabels:
      app: ticker
  template:
    metadata:
      labels:
        app: ticker
    spec:
      containers:
      - name: ticker
        image: ticker
`))
	// running lists the ReplicaSet's pods running and not being deleted,
	// as "pod@node".
	pods := func() []*skiffv1.Pod {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := cl.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{LabelSelector: "app=ticker"}))
		if err != nil {
			return nil
		}
		return res.Msg.GetItems()
	}
	running := func() []string {
		var out []string
		for _, p := range pods() {
			if p.GetMetadata().GetDeletionTimestamp() == nil && p.GetStatus().GetPhase() == "Running" {
				out = append(out, p.GetMetadata().GetName()+"@"+p.GetSpec().GetNodeName())
			}
		}
		slices.Sort(out)
		return out
	}
	onNode := func(list []string, node string) int {
		n := 0
		for _, s := range list {
			if strings.HasSuffix(s, "@"+node) {
				n++
			}
		}
		return n
	}
	var run []string
	eventually(t, 60*time.Second, func() bool {
		run = running()
		return len(run) == 3 && onNode(run, "edge-a") > 0 && onNode(run, "edge-b") > 0
	}, func() string { return fmt.Sprintf("the ReplicaSet's pods running: %v, want 3 over both nodes", run) })
	t.Logf("before the kill: %v", run)
	victims := map[string]bool{}
	for _, p := range pods() {
		if p.GetSpec().GetNodeName() == "edge-a" {
			victims[p.GetMetadata().GetName()] = true
		}
	}

	killAt := time.Now()
	agents["edge-a"].p.kill()

	readyOf := func(name string) (string, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := nodes.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: name}))
		if err != nil {
			return err.Error(), ""
		}
		var taints []string
		for _, tn := range res.Msg.GetSpec().GetTaints() {
			taints = append(taints, tn.GetKey()+":"+tn.GetEffect())
		}
		slices.Sort(taints)
		for _, cond := range res.Msg.GetStatus().GetConditions() {
			if cond.GetType() == "Ready" {
				return cond.GetStatus(), strings.Join(taints, ",")
			}
		}
		return "none", strings.Join(taints, ",")
	}
	var ready, taints string
	eventually(t, 30*time.Second, func() bool {
		ready, taints = readyOf("edge-a")
		return ready == "Unknown" && taints == "node.kubernetes.io/unreachable:NoExecute,node.kubernetes.io/unreachable:NoSchedule"
	}, func() string { return fmt.Sprintf("killed node: Ready %s, taints %q", ready, taints) })
	notReady := time.Since(killAt)

	evicted := func() []string {
		var out []string
		for _, p := range pods() {
			if victims[p.GetMetadata().GetName()] && p.GetMetadata().GetDeletionTimestamp() != nil {
				out = append(out, p.GetMetadata().GetName())
			}
		}
		return out
	}
	eventually(t, 30*time.Second, func() bool { return len(evicted()) == len(victims) },
		func() string { return fmt.Sprintf("evicted %v of the killed node's pods %v", evicted(), victims) })
	evictedAt := time.Since(killAt)
	eventually(t, 30*time.Second, func() bool {
		run = running()
		return len(run) == 3 && onNode(run, "edge-b") == 3
	}, func() string { return fmt.Sprintf("running after the eviction: %v, want 3 on edge-b", run) })
	replaced := time.Since(killAt)
	t.Logf("after the kill of edge-a's agent: NotReady at %s, its %d pod(s) evicted at %s (toleration 5s), replacements Running on edge-b at %s",
		notReady.Round(10*time.Millisecond), len(victims), evictedAt.Round(10*time.Millisecond), replaced.Round(10*time.Millisecond))
	if evs := c.mustSkiff("get", "events"); !strings.Contains(evs, "TaintManagerEviction") {
		t.Errorf("no TaintManagerEviction event:\n%s", evs)
	}

	// The agent comes back: the evicted pods are stopped and confirmed,
	// never run again, and the node is Ready with no taint.
	a := agents["edge-a"]
	a.p = startProc(t, "edge-a#2", a.out, a.args...)
	eventually(t, 30*time.Second, func() bool { return len(evicted()) == 0 },
		func() string { return fmt.Sprintf("evicted pods not confirmed by their node: %v", evicted()) })
	eventually(t, 30*time.Second, func() bool {
		ready, taints = readyOf("edge-a")
		return ready == "True" && taints == ""
	}, func() string { return fmt.Sprintf("node back: Ready %s, taints %q", ready, taints) })
	if sbs, ctrs := criSandboxes(t, a.socket); len(sbs) != 0 || len(ctrs) != 0 {
		t.Errorf("the node that came back keeps %d sandboxes and %d containers of evicted pods", len(sbs), len(ctrs))
	}
	if run := running(); len(run) != 3 || onNode(run, "edge-b") != 3 {
		t.Errorf("running once edge-a is back: %v, want the 3 replacements on edge-b", run)
	}
}
