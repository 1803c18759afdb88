package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
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
	"skiff.dev/skiff/netns"
	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

// The tests of this file run `skiff dev` as a process of its own, so that
// it can be killed with SIGKILL as a crashing machine would end it, and
// started again on the same directories.

// killSeedEnv replays TestNodeKilledAtRandom with the seed a failed run
// logged.
const killSeedEnv = "SKIFF_KILL_SEED"

// nodeProc is `skiff dev` run as a process on directories of its own under
// dir; they stay the same across restarts.
type nodeProc struct {
	t        *testing.T
	dataDir  string
	stateDir string
	socket   string
	listen   string
	args     []string
	out      *syncWriter
	p        *proc
	starts   int
	c        *cluster // the CLI, as the admin
	api      *clients
}

// startNodeProc starts `skiff dev` on dir and waits until its API answers.
// Every namespace pin left under its state directory is removed when the
// test ends, whatever the outcome.
func startNodeProc(t *testing.T, dir string) *nodeProc {
	t.Helper()
	n := &nodeProc{
		t: t, dataDir: filepath.Join(dir, "data"), stateDir: filepath.Join(dir, "state"), socket: filepath.Join(dir, "cri.sock"),
		listen: freeAddr(t), out: &syncWriter{w: new(bytes.Buffer)},
	}
	// Registered first, so run last: after the process is killed.
	t.Cleanup(func() { unmountAll(t, n.stateDir) })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("skiff dev output:\n%s", n.out.String())
		}
	})
	n.args = []string{"dev", "--no-cni", "--data-dir", n.dataDir, "--state-dir", n.stateDir, "--cri-socket", n.socket, "--listen", n.listen,
		"--client-config", filepath.Join(dir, "client.config"), "--node-name", "node-1", "--log-level", "info"}
	n.start()
	// Not waitAdminConfig: dev mode serves plain HTTP, with no CA.
	var found bool
	var err error
	eventually(t, 60*time.Second, func() bool {
		_, found, err = loadClientConfig(adminConfigPath(n.dataDir))
		return found && err == nil
	}, func() string {
		return fmt.Sprintf("skiff dev wrote no admin's client config: found %v, %v", found, err)
	})
	n.c = &cluster{t: t, server: n.listen, config: adminConfigPath(n.dataDir), dataDir: n.dataDir, socket: n.socket}
	n.api = n.c.clients()
	n.waitAPI()
	return n
}

// start runs the process again on the same directories.
func (n *nodeProc) start() {
	n.t.Helper()
	n.starts++
	n.p = startProc(n.t, fmt.Sprintf("dev#%d", n.starts), n.out, n.args...)
}

// waitAPI waits until the API answers a list of pods.
func (n *nodeProc) waitAPI() {
	n.t.Helper()
	var err error
	eventually(n.t, 60*time.Second, func() bool {
		_, err = n.c.skiff("get", "pods")
		return err == nil
	}, func() string { return fmt.Sprintf("the API of skiff dev does not answer: %v", err) })
}

// getPod reads a pod through the API; nil when it does not exist.
func (n *nodeProc) getPod(name string) (*skiffv1.Pod, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := n.api.pods.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Namespace: "default", Name: name}))
	if connect.CodeOf(err) == connect.CodeNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// criSandboxes lists the pod sandboxes of the CRI server on socket.
func criSandboxes(t *testing.T, socket string) ([]*runtimeapi.PodSandbox, []*runtimeapi.Container) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rs := runtimeapi.NewRuntimeServiceClient(conn)
	sbs, err := rs.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatalf("CRI ListPodSandbox: %v", err)
	}
	ctrs, err := rs.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		t.Fatalf("CRI ListContainers: %v", err)
	}
	return sbs.Items, ctrs.Containers
}

// pins lists the network namespaces pinned under the node's state
// directory, by file name (the sandbox's ID).
func (n *nodeProc) pins() []string {
	n.t.Helper()
	paths, err := netns.List(filepath.Join(n.stateDir, "netns"))
	if err != nil {
		n.t.Fatal(err)
	}
	var out []string
	for _, p := range paths {
		if ok, err := netns.IsPinned(p); ok && err == nil {
			out = append(out, filepath.Base(p))
		}
	}
	return out
}

// podLogDirs lists what is left in the node's pod log directory.
func (n *nodeProc) podLogDirs() []string {
	entries, err := os.ReadDir(filepath.Join(n.dataDir, "node", "logs"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		n.t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// killPod is one pod of TestNodeKilledAtRandom and what it must become.
type killPod struct {
	name     string
	exits    bool   // exits 0 under restartPolicy Never; else runs for an hour
	manifest string // a file
	// lastID is the container a long-running pod ran in when its round's
	// kill came ("" if it was not Running yet).
	lastID string
}

// TestNodeKilledAtRandom kills `skiff dev` with SIGKILL at a random moment
// while a batch of pods is being created and started, five times, starting
// it again on the same directories each time. After each restart:
//
//   - every pod reaches its phase: Succeeded for one that exits 0 under
//     restartPolicy Never, Running for one that runs for an hour. The
//     runtime runs in the killed process, so a long-running pod that ran
//     before the kill runs afterwards in a replaced container (another
//     container ID, its restart count higher), which is what is asserted.
//     An exiting pod whose container the kill ended mid-run cannot have
//     succeeded: it may end Failed, but only with the status the runtime
//     gives a container that died with it (exit code 255, reason Unknown,
//     "runtime restarted").
//   - nothing is orphaned: the CRI has exactly one ready sandbox per pod
//     not yet finished, none for a finished one (it released its own), no
//     sandbox of a pod that does not exist, and the namespace pins under
//     the state directory are exactly the ready sandboxes'.
//
// At the end, once every pod is deleted, no sandbox, no pin and no pod log
// directory is left.
//
// The kill's delay comes from a seeded math/rand; the seed is logged, and
// SKIFF_KILL_SEED=<seed> replays the same delays.
func TestNodeKilledAtRandom(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root: skiff dev creates a network namespace per pod")
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv(killSeedEnv); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("$%s: %v", killSeedEnv, err)
		}
	}
	t.Logf("seed %d (replay with %s=%d)", seed, killSeedEnv, seed)
	rng := rand.New(rand.NewSource(seed))

	hello, guest := buildWasm(t, "../../examples/hello"), buildWasm(t, "../../runtime/wasm/testdata/guest")
	n := startNodeProc(t, t.TempDir())
	n.c.mustSkiff("image", "import", "--data-dir", n.dataDir, "hello", hello)
	n.c.mustSkiff("image", "import", "--data-dir", n.dataDir, "guest", guest)

	const rounds, exiting, longRunning = 5, 3, 2
	var all []*killPod
	for round := range rounds {
		var batch []*killPod
		for i := range exiting + longRunning {
			p := &killPod{name: fmt.Sprintf("r%d-exit-%d", round, i), exits: i < exiting}
			m := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + p.name + "\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: hello\n"
			if !p.exits {
				p.name = fmt.Sprintf("r%d-long-%d", round, i-exiting)
				m = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + p.name + "\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: guest\n    args: [sleep, 1h]\n"
			}
			p.manifest = writeFile(t, p.name+".yaml", m)
			batch = append(batch, p)
		}
		all = append(all, batch...)

		// The batch is created one pod at a time; the kill lands somewhere
		// in its creation or its pods' start. Creations the kill refuses
		// are made again after the restart.
		created := make(chan struct{})
		go func() {
			defer close(created)
			for _, p := range batch {
				_, _ = n.c.skiff("apply", "-f", p.manifest)
			}
		}()
		delay := time.Duration(rng.Int63n(int64(1500 * time.Millisecond)))
		t.Logf("round %d: kill -9 after %s", round, delay)
		<-time.After(delay) // a random moment, not a synchronisation
		for _, p := range all {
			p.lastID = ""
			if p.exits {
				continue
			}
			if pod, err := n.getPod(p.name); err == nil && pod != nil && pod.GetStatus().GetPhase() == "Running" {
				if cs := pod.GetStatus().GetContainerStatuses(); len(cs) == 1 && cs[0].GetState().GetRunning() != nil {
					p.lastID = cs[0].GetContainerId()
				}
			}
		}
		n.p.kill()
		<-created

		restarted := time.Now()
		n.start()
		n.waitAPI()
		apiUp := time.Since(restarted)
		for _, p := range batch {
			n.c.mustSkiff("apply", "-f", p.manifest)
		}
		n.checkPods(t, round, all)
		n.checkNoOrphans(t, round, all)
		t.Logf("round %d: API up %s after the restart, every pod settled after %s", round, apiUp.Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))
	}

	var names []string
	for _, p := range all {
		names = append(names, p.name)
	}
	n.c.mustSkiff(append([]string{"delete", "pod"}, names...)...)
	var sbs []*runtimeapi.PodSandbox
	var ctrs []*runtimeapi.Container
	var pins, logs []string
	eventually(t, 60*time.Second, func() bool {
		sbs, ctrs = criSandboxes(t, n.socket)
		pins, logs = n.pins(), n.podLogDirs()
		return len(sbs) == 0 && len(ctrs) == 0 && len(pins) == 0 && len(logs) == 0
	}, func() string {
		return fmt.Sprintf("after deleting every pod the node still has %d sandboxes, %d containers, pins %v, pod log directories %v",
			len(sbs), len(ctrs), pins, logs)
	})
	for _, name := range names {
		if p, err := n.getPod(name); err != nil || p != nil {
			t.Errorf("pod %s after its deletion: %v, %v; want not found", name, p.GetStatus().GetPhase(), err)
		}
	}
}

// checkPods waits until every pod is in its phase (see
// TestNodeKilledAtRandom) and checks its container.
func (n *nodeProc) checkPods(t *testing.T, round int, all []*killPod) {
	t.Helper()
	for _, p := range all {
		var pod *skiffv1.Pod
		var err error
		eventually(t, 60*time.Second, func() bool {
			pod, err = n.getPod(p.name)
			if err != nil || pod == nil {
				return false
			}
			ph := pod.GetStatus().GetPhase()
			if p.exits {
				return ph == "Succeeded" || ph == "Failed"
			}
			cs := pod.GetStatus().GetContainerStatuses()
			return ph == "Running" && len(cs) == 1 && cs[0].GetState().GetRunning() != nil && cs[0].GetContainerId() != p.lastID
		}, func() string {
			return fmt.Sprintf("round %d: pod %s (exits %v, container before the kill %q): %v, %v", round, p.name, p.exits, p.lastID, podSummary(pod), err)
		})
		st := pod.GetStatus()
		if !p.exits {
			if p.lastID != "" && st.GetContainerStatuses()[0].GetRestartCount() == 0 {
				t.Errorf("round %d: pod %s runs in container %s, not %s that the kill ended, yet its restart count is 0",
					round, p.name, st.GetContainerStatuses()[0].GetContainerId(), p.lastID)
			}
			continue
		}
		if st.GetPhase() == "Succeeded" {
			continue
		}
		// Failed: only as a container that died with the runtime.
		var term *skiffv1.ContainerStateTerminated
		if cs := st.GetContainerStatuses(); len(cs) == 1 {
			term = cs[0].GetState().GetTerminated()
		}
		if term == nil || term.GetExitCode() != 255 || term.GetReason() != "Unknown" || !strings.Contains(term.GetMessage(), "runtime restarted") {
			t.Errorf("round %d: pod %s that exits 0 is %s; want Succeeded, or Failed only as a container the kill ended (255, Unknown, runtime restarted)",
				round, p.name, podSummary(pod))
			continue
		}
		t.Logf("round %d: pod %s was running when the node was killed: Failed (%s)", round, p.name, podSummary(pod))
	}
}

// checkNoOrphans checks that the node holds one ready sandbox per pod not
// yet finished, with one running container, the one its status names;
// that every other sandbox belongs to a finished pod; and that the pins
// are the ready sandboxes'. The agent may still be releasing a finished
// pod's sandbox, so it waits for that.
func (n *nodeProc) checkNoOrphans(t *testing.T, round int, all []*killPod) {
	t.Helper()
	var problems []string
	eventually(t, 30*time.Second, func() bool {
		problems = n.orphans(t, all)
		return len(problems) == 0
	}, func() string {
		return fmt.Sprintf("round %d: the node's sandboxes and pins do not match its pods:\n  %s", round, strings.Join(problems, "\n  "))
	})
}

func (n *nodeProc) orphans(t *testing.T, all []*killPod) []string {
	pods := map[string]*skiffv1.Pod{}
	for _, p := range all {
		pod, err := n.getPod(p.name)
		if err != nil || pod == nil {
			return []string{fmt.Sprintf("pod %s: %v, %v", p.name, pod, err)}
		}
		pods[p.name] = pod
	}
	sbs, ctrs := criSandboxes(t, n.socket)
	var problems, ready []string
	readyOf := map[string][]string{}
	for _, sb := range sbs {
		md := sb.GetMetadata()
		pod := pods[md.GetName()]
		if pod == nil || md.GetNamespace() != "default" || md.GetUid() != pod.GetMetadata().GetUid() {
			problems = append(problems, fmt.Sprintf("sandbox %s (%s) of no pod: %s/%s uid %s", sb.Id, sb.State, md.GetNamespace(), md.GetName(), md.GetUid()))
			continue
		}
		if sb.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			ready = append(ready, sb.Id)
			readyOf[md.GetName()] = append(readyOf[md.GetName()], sb.Id)
		} else if ph := pod.GetStatus().GetPhase(); ph != "Succeeded" && ph != "Failed" {
			problems = append(problems, fmt.Sprintf("sandbox %s of pod %s (%s) is %s", sb.Id, md.GetName(), ph, sb.State))
		}
	}
	for name, pod := range pods {
		finished := pod.GetStatus().GetPhase() == "Succeeded" || pod.GetStatus().GetPhase() == "Failed"
		switch got := readyOf[name]; {
		case finished && len(got) > 0:
			problems = append(problems, fmt.Sprintf("pod %s is %s and still holds ready sandboxes %v", name, pod.GetStatus().GetPhase(), got))
		case !finished && len(got) != 1:
			problems = append(problems, fmt.Sprintf("pod %s is %s with %d ready sandboxes %v, want 1", name, pod.GetStatus().GetPhase(), len(got), got))
		case !finished:
			var running []string
			for _, c := range ctrs {
				if c.PodSandboxId == got[0] && c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
					running = append(running, c.Id)
				}
			}
			want := ""
			if cs := pod.GetStatus().GetContainerStatuses(); len(cs) == 1 {
				want = cs[0].GetContainerId()
			}
			if len(running) != 1 || running[0] != want {
				problems = append(problems, fmt.Sprintf("pod %s runs containers %v in its sandbox, want only %q its status names", name, running, want))
			}
		}
	}
	slices.Sort(ready)
	if pins := n.pins(); !slices.Equal(pins, ready) {
		problems = append(problems, fmt.Sprintf("namespace pins %v, ready sandboxes %v", pins, ready))
	}
	return problems
}

func podSummary(p *skiffv1.Pod) string {
	if p == nil {
		return "<none>"
	}
	st := p.GetStatus()
	s := fmt.Sprintf("%s (%s: %s)", st.GetPhase(), st.GetReason(), st.GetMessage())
	for _, cs := range st.GetContainerStatuses() {
		s += fmt.Sprintf(" [container %s id %q restarts %d state %v]", cs.GetName(), cs.GetContainerId(), cs.GetRestartCount(), cs.GetState())
	}
	return s
}

// withStartSection returns module m, as wasmtest builds it (three imported
// functions, one defined: _start), with a Wasm start section that calls
// _start: the module's steps then run while it is instantiated, before
// anything is exported.
func withStartSection(t *testing.T, m []byte) []byte {
	t.Helper()
	const startFn = 3 // after fd_write, proc_exit, poll_oneoff
	out := append([]byte(nil), m[:8]...)
	inserted := false
	for i := 8; i < len(m); {
		id := m[i]
		size, n := uint32(0), 0
		for shift := 0; ; shift += 7 {
			b := m[i+1+n]
			size |= uint32(b&0x7f) << shift
			n++
			if b&0x80 == 0 {
				break
			}
		}
		end := i + 1 + n + int(size)
		if !inserted && (id == 10 || id == 11 || id == 9 || id == 12) {
			out = append(out, 8, 1, startFn) // start section: one byte, function 3
			inserted = true
		}
		out = append(out, m[i:end]...)
		i = end
	}
	if !inserted {
		t.Fatal("withStartSection: no code section")
	}
	return out
}

// cpuTicks is the CPU time process pid has used, user and system, in
// clock ticks, from /proc/PID/stat.
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// pid (comm) state ppid ... utime is the 14th field, stime the 15th;
	// comm may hold spaces, so count from its closing parenthesis.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	return utime + stime
}

// cpuRate measures the share of a CPU process pid uses, over at least
// window: call it from an eventually, it answers ok once a window has
// passed since the previous sample.
type cpuRate struct {
	t      *testing.T
	pid    int
	window time.Duration
	at     time.Time
	ticks  int64
	last   float64 // CPUs used over the last whole window
}

func (r *cpuRate) sample() (cpus float64, ok bool) {
	now, ticks := time.Now(), cpuTicks(r.t, r.pid)
	if r.at.IsZero() {
		r.at, r.ticks = now, ticks
		return 0, false
	}
	if now.Sub(r.at) < r.window {
		return 0, false
	}
	const clockTicks = 100 // USER_HZ on Linux
	r.last = float64(ticks-r.ticks) / clockTicks / now.Sub(r.at).Seconds()
	r.at, r.ticks = now, ticks
	return r.last, true
}

// TestStartSectionLoopDeleted runs a pod whose module loops forever in its
// Wasm start section, so that instantiating it, and with it the CRI's
// StartContainer, never returns; then deletes it. The pod is gone within
// its grace period and a margin, no sandbox or pin is left, and the node's
// CPU use drops back: the loop was ended, not abandoned.
func TestStartSectionLoopDeleted(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root: skiff dev creates a network namespace per pod")
	}
	n := startNodeProc(t, t.TempDir())
	mod := filepath.Join(t.TempDir(), "spin.wasm")
	if err := os.WriteFile(mod, withStartSection(t, wasmtest.Build(wasmtest.Spin())), 0o644); err != nil {
		t.Fatal(err)
	}
	n.c.mustSkiff("image", "import", "--data-dir", n.dataDir, "spin", mod)
	const grace = 2 * time.Second
	n.c.mustSkiff("apply", "-f", writeFile(t, "spin.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: spin\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    image: spin\n"))

	// The loop runs: the node uses most of a CPU.
	busy := &cpuRate{t: t, pid: n.p.cmd.Process.Pid, window: 500 * time.Millisecond}
	eventually(t, 30*time.Second, func() bool { cpus, ok := busy.sample(); return ok && cpus > 0.5 },
		func() string {
			return fmt.Sprintf("the node uses %.2f CPUs, want the start section's loop to use most of one", busy.last)
		})
	sbs, _ := criSandboxes(t, n.socket)
	if len(sbs) != 1 || len(n.pins()) != 1 {
		t.Fatalf("the spinning pod has %d sandboxes and pins %v, want 1 of each", len(sbs), n.pins())
	}

	deleted := time.Now()
	n.c.mustSkiff("delete", "pod", "spin", "--wait=false")
	var pod *skiffv1.Pod
	var err error
	eventually(t, grace+10*time.Second, func() bool {
		pod, err = n.getPod("spin")
		return err == nil && pod == nil
	}, func() string {
		return fmt.Sprintf("pod spin still exists %s after its deletion (grace period %s): %s, %v", time.Since(deleted), grace, podSummary(pod), err)
	})
	t.Logf("pod spin gone %s after its deletion", time.Since(deleted))
	var pins []string
	eventually(t, 10*time.Second, func() bool {
		sbs, _ = criSandboxes(t, n.socket)
		pins = n.pins()
		return len(sbs) == 0 && len(pins) == 0
	}, func() string {
		return fmt.Sprintf("after the pod's deletion the node has %d sandboxes and pins %v", len(sbs), pins)
	})
	idle := &cpuRate{t: t, pid: n.p.cmd.Process.Pid, window: time.Second}
	eventually(t, 15*time.Second, func() bool { cpus, ok := idle.sample(); return ok && cpus < 0.2 },
		func() string {
			return fmt.Sprintf("after the pod's deletion the node still uses %.2f CPUs (%.2f while it spun)", idle.last, busy.last)
		})
}

// TestNeverStartErrorFails runs, under restartPolicy Never, a pod whose
// module traps in its Wasm start section, so that it cannot be
// instantiated: the pod ends Failed, its container terminated with reason
// StartError and exit code 128 and the trap's message in its status, and it
// is not tried again.
func TestNeverStartErrorFails(t *testing.T) {
	c := startDev(t)
	mod := filepath.Join(t.TempDir(), "trap.wasm")
	if err := os.WriteFile(mod, withStartSection(t, wasmtest.Build(wasmtest.Write(1, "instantiating\n"), wasmtest.Trap())), 0o644); err != nil {
		t.Fatal(err)
	}
	c.mustSkiff("image", "import", "--data-dir", c.dataDir, "trap", mod)
	c.mustSkiff("apply", "-f", writeFile(t, "trap.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: trap\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: trap\n"))

	var p *skiffv1.Pod
	get := func() *skiffv1.Pod {
		res, err := c.clients().pods.Get(context.Background(), connect.NewRequest(&skiffv1.GetRequest{Namespace: "default", Name: "trap"}))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg
	}
	eventually(t, 30*time.Second, func() bool {
		p = get()
		return p.GetStatus().GetPhase() == "Failed"
	}, func() string { return "pod trap is " + podSummary(p) + ", want Failed" })
	cs := p.GetStatus().GetContainerStatuses()
	if len(cs) != 1 || cs[0].GetState().GetTerminated() == nil {
		t.Fatalf("pod trap: %s, want its container terminated", podSummary(p))
	}
	term := cs[0].GetState().GetTerminated()
	if term.GetReason() != "StartError" || term.GetExitCode() != 128 || !strings.Contains(term.GetMessage(), "unreachable") {
		t.Errorf("pod trap's container ended %d %q %q; want 128 StartError with the trap's message (unreachable)",
			term.GetExitCode(), term.GetReason(), term.GetMessage())
	}
	if cs[0].GetRestartCount() != 0 {
		t.Errorf("pod trap's container was restarted %d times under restartPolicy Never", cs[0].GetRestartCount())
	}
	c.mustSkiff("delete", "pod", "trap")
	c.waitSandboxes(0)
}
