package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// TestClusterAgentMoves runs an agent that finds the three servers by
// gossip and a pod that keeps running on it, then kills the server the
// agent talks to with SIGKILL: the agent moves to another server (its
// heartbeat goes on, members shows it alive, a new pod runs on it) and the
// running pod is left alone: same container, not restarted, still ticking.
func TestClusterAgentMoves(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root: a node creates a network namespace per pod")
	}
	c := startServers(t)
	dir := t.TempDir()
	t.Cleanup(func() { unmountAll(t, filepath.Join(dir, "state")) })
	node := &cluster{t: t, server: c.all[0].api, config: c.config, dataDir: filepath.Join(dir, "node-data"), socket: filepath.Join(dir, "cri.sock")}
	var gossip []string
	for _, s := range c.all {
		gossip = append(gossip, s.gossip)
	}
	out := &syncWriter{w: new(bytes.Buffer)}
	agent := startProc(t, "agent", out, "agent", "--join", strings.Join(gossip, ","), "--token", c.token, "--data-dir", node.dataDir,
		"--state-dir", filepath.Join(dir, "state"), "--no-cni", "--cri-socket", node.socket, "--node-name", "edge-move", "--log-level", "warn")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent output:\n%s", out.String())
		}
	})
	var nodes string
	eventually(t, 30*time.Second, func() bool {
		nodes, _ = node.skiff("get", "nodes")
		return regexp.MustCompile(`edge-move\s+Ready`).MatchString(nodes)
	}, func() string { return "the agent did not register: skiff get nodes:\n" + nodes })
	node.mustSkiff("image", "import", "--data-dir", node.dataDir, "ticker", buildWasm(t, "testdata/ticker"))
	node.mustSkiff("image", "import", "--data-dir", node.dataDir, "hello", buildWasm(t, "../../examples/hello"))
	node.mustSkiff("apply", "-f", writeFile(t, "ticker.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ticker\nspec:\n  containers:\n  - name: ticker\n    image: ticker\n"))
	node.waitPhase("ticker", "Running")
	before := runningContainer(t, c.all[0], "ticker")

	// The server the agent talks to is the one it holds connections to.
	var used *serverProc
	var peers map[string]int
	eventually(t, 10*time.Second, func() bool {
		used, peers = c.serverOf(t, agent)
		return used != nil
	}, func() string { return fmt.Sprintf("the agent is not connected to exactly one server's API: %v", peers) })
	leader := c.leader()
	used.kill()
	t.Logf("killed %s, the server the agent used (the leader: %v), with SIGKILL", used.name, used == leader)
	live := c.running()
	node.server = live[0].api

	// The agent moves: it holds a connection to a live server, its
	// heartbeat goes on after the kill, and members shows it alive.
	var moved *serverProc
	eventually(t, 20*time.Second, func() bool { moved, peers = c.serverOf(t, agent); return moved != nil },
		func() string { return fmt.Sprintf("the agent did not move to a live server: connected to %v", peers) })
	var beat time.Time
	eventually(t, 30*time.Second, func() bool {
		beat = heartbeat(live[0], "edge-move")
		return beat.After(used.killAt)
	}, func() string {
		return fmt.Sprintf("the node's last heartbeat is at %v, before the kill at %v", beat.Format(time.StampMilli), used.killAt.Format(time.StampMilli))
	})
	t.Logf("the agent moved to %s; its heartbeat came %v after the kill", moved.name, beat.Sub(used.killAt).Round(time.Millisecond))
	var ms []member
	eventually(t, 10*time.Second, func() bool {
		var err error
		ms, err = c.members(live[0])
		return err == nil && slices.ContainsFunc(ms, func(m member) bool {
			return m.name == "edge-move" && m.role == "agent" && m.state == "alive"
		})
	}, func() string { return fmt.Sprintf("skiff members does not show the agent alive: %+v", ms) })

	// The pod was left alone: the same container runs, not restarted, and
	// its output goes on.
	after := runningContainer(t, live[0], "ticker")
	if after.id != before.id || after.restarts != 0 || after.phase != "Running" {
		t.Errorf("after the move ticker is %s with container %s (%d restarts), want Running with %s (0 restarts)", after.phase, after.id, after.restarts, before.id)
	}
	if ids := criContainers(t, node.socket); !slices.Equal(ids, []string{before.id + " CONTAINER_RUNNING"}) {
		t.Errorf("the node's CRI server has containers %v, want only %s running", ids, before.id)
	}
	lastTick := func() int {
		ticks := regexp.MustCompile(`tick (\d+)\n`).FindAllStringSubmatch(node.mustSkiff("logs", "ticker"), -1)
		if len(ticks) == 0 {
			return -1
		}
		n, _ := strconv.Atoi(ticks[len(ticks)-1][1])
		return n
	}
	first := lastTick()
	eventually(t, 10*time.Second, func() bool { return lastTick() > first },
		func() string { return fmt.Sprintf("ticker's output stopped at tick %d", first) })

	// A pod applied after the move runs on the node.
	node.mustSkiff("apply", "-f", "../../examples/hello/pod.yaml")
	if p := node.waitPhase("hello", "Succeeded", "Failed"); p.Status.Phase != "Succeeded" || p.Spec.NodeName != "edge-move" {
		t.Errorf("hello is %s on %q, want Succeeded on edge-move", p.Status.Phase, p.Spec.NodeName)
	}
	node.mustSkiff("delete", "pod", "ticker", "hello", "--grace-period", "0", "--force")
	node.waitSandboxes(0)
	if err := agent.stop(); err != nil {
		t.Errorf("the agent stopped with %v, want exit status 0", err)
	}
}

// podContainer is what the API says of a pod's container.
type podContainer struct {
	phase    string
	id       string
	restarts uint32
}

// runningContainer reads the pod's phase and its one container through s.
func runningContainer(t *testing.T, s *serverProc, name string) podContainer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := s.pods.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: name}))
	if err != nil {
		t.Fatalf("get pod %s through %s: %v", name, s.name, err)
	}
	st := res.Msg.GetStatus()
	if len(st.GetContainerStatuses()) != 1 {
		t.Fatalf("pod %s has container statuses %v", name, st.GetContainerStatuses())
	}
	cs := st.GetContainerStatuses()[0]
	return podContainer{phase: st.GetPhase(), id: cs.GetContainerId(), restarts: cs.GetRestartCount()}
}

// heartbeat returns the last heartbeat of the node's Ready condition, as s
// answers; zero when it cannot say.
func heartbeat(s *serverProc, node string) time.Time {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := s.nodes.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: node}))
	if err != nil {
		return time.Time{}
	}
	for _, c := range res.Msg.GetStatus().GetConditions() {
		if c.GetType() == "Ready" && c.GetStatus() == "True" {
			return c.GetLastHeartbeatTime().AsTime()
		}
	}
	return time.Time{}
}

// criContainers lists the node's containers through CRI, as "ID STATE".
func criContainers(t *testing.T, socket string) []string {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	res, err := runtimeapi.NewRuntimeServiceClient(conn).ListContainers(context.Background(), &runtimeapi.ListContainersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range res.Containers {
		out = append(out, c.Id+" "+c.State.String())
	}
	return out
}

// serverOf returns the running server whose API the process holds
// established TCP connections to, when there is exactly one, and the
// connections it holds by remote address.
func (c *servers) serverOf(t *testing.T, p *proc) (*serverProc, map[string]int) {
	t.Helper()
	peers, err := tcpPeers(p.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	var found []*serverProc
	for _, s := range c.running() {
		if peers[s.api] > 0 {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		return nil, peers
	}
	return found[0], peers
}

// tcpPeers counts the established IPv4 TCP connections of process pid by
// remote address, from /proc.
func tcpPeers(pid int) (map[string]int, error) {
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return nil, err
	}
	sockets := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			sockets[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	table, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return nil, err
	}
	peers := map[string]int{}
	for _, line := range strings.Split(string(table), "\n")[1:] {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "01" || !sockets[f[9]] {
			continue
		}
		hexIP, hexPort, ok := strings.Cut(f[2], ":")
		ip, err1 := strconv.ParseUint(hexIP, 16, 32)
		port, err2 := strconv.ParseUint(hexPort, 16, 16)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("/proc/%d/net/tcp: remote address %q", pid, f[2])
		}
		// The address is in network byte order, read as a little-endian word.
		peers[fmt.Sprintf("%d.%d.%d.%d:%d", ip&0xff, ip>>8&0xff, ip>>16&0xff, ip>>24, port)]++
	}
	return peers, nil
}
