package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// cluster is a running `skiff dev` for a test.
type cluster struct {
	t       *testing.T
	server  string
	config  string // the client config the CLI reads: the admin's
	dataDir string
	socket  string
	stop    func()
}

// startDev runs dev mode in this process with every directory and port of
// its own, and stops it (and removes what it left in the kernel) when the
// test ends.
func startDev(t *testing.T, opts ...func(*devOptions)) *cluster {
	t.Helper()
	dir := t.TempDir()
	c := startDevIn(t, dir, opts...)
	t.Cleanup(func() { unmountAll(t, filepath.Join(dir, "state")) })
	return c
}

// startDevIn runs dev mode on the data under dir, which may hold an earlier
// run's. It stops when the test ends or when stop is called.
func startDevIn(t *testing.T, dir string, opts ...func(*devOptions)) *cluster {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: skiff dev creates a network namespace per pod")
	}
	c := &cluster{t: t, dataDir: filepath.Join(dir, "data"), socket: filepath.Join(dir, "cri.sock")}
	c.config = adminConfigPath(c.dataDir)
	ready := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logs := &syncWriter{w: &bytes.Buffer{}}
	o := &devOptions{
		serverOptions: serverOptions{dataDir: c.dataDir, listen: "127.0.0.1:0", eventTTL: time.Hour, clientConfig: filepath.Join(dir, "client.config")},
		agentOptions:  agentOptions{stateDir: filepath.Join(dir, "state"), criSocket: c.socket, nodeName: "node-1", agentListen: "127.0.0.1:0", runtime: runtimeFlags{noCNI: true}},
		runOptions:    runOptions{logLevel: "info", logOut: logs, ready: func(addr string) { ready <- addr }},
	}
	for _, opt := range opts {
		opt(o)
	}
	log, err := o.logger()
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- runDev(ctx, log, o) }()
	var once sync.Once
	c.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("skiff dev: %v", err)
			}
			if t.Failed() {
				t.Logf("skiff dev log:\n%s", logs.String())
			}
		})
	}
	t.Cleanup(c.stop)
	select {
	case c.server = <-ready:
	case err := <-done:
		t.Fatalf("skiff dev stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("skiff dev did not come up in 30s")
	}
	return c
}

// unmountAll removes any network namespace pin left under dir.
func unmountAll(t *testing.T, dir string) {
	_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			_ = unix.Unmount(p, unix.MNT_DETACH)
		}
		return nil
	})
}

// skiff runs the CLI as a user would and returns what it printed.
func (c *cluster) skiff(args ...string) (string, error) {
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"--server", c.server, "--config", c.config}, args...))
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// clients are the API clients the CLI makes from c's client config, for
// the server at c.server: as skiff --server c.server --config c.config.
func (c *cluster) clients() *clients {
	c.t.Helper()
	cfg, found, err := loadClientConfig(c.config)
	if err != nil || !found {
		c.t.Fatalf("client config %s: found %v, %v", c.config, found, err)
	}
	cfg.Server = c.server
	cl, err := newClients(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

func (c *cluster) mustSkiff(args ...string) string {
	c.t.Helper()
	out, err := c.skiff(args...)
	if err != nil {
		c.t.Fatalf("skiff %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// podPhase reads a pod's status as `skiff get pod NAME -o json` shows it.
func (c *cluster) pod(name string) podView {
	c.t.Helper()
	var p podView
	if err := json.Unmarshal([]byte(c.mustSkiff("get", "pod", name, "-o", "json")), &p); err != nil {
		c.t.Fatalf("decode pod %s: %v", name, err)
	}
	return p
}

type podView struct {
	Spec struct {
		NodeName string `json:"nodeName"`
	} `json:"spec"`
	Status struct {
		Conditions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
		Phase             string `json:"phase"`
		Reason            string `json:"reason"`
		Message           string `json:"message"`
		ContainerStatuses []struct {
			State struct {
				Terminated *struct {
					ExitCode int    `json:"exitCode"`
					Reason   string `json:"reason"`
					Message  string `json:"message"`
				} `json:"terminated"`
			} `json:"state"`
		} `json:"containerStatuses"`
	} `json:"status"`
}

func (c *cluster) waitPhase(name string, want ...string) podView {
	c.t.Helper()
	var p podView
	eventually(c.t, 60*time.Second, func() bool {
		p = c.pod(name)
		for _, w := range want {
			if p.Status.Phase == w {
				return true
			}
		}
		return false
	}, func() string {
		return fmt.Sprintf("pod %s is %q (%s: %s), want %v", name, p.Status.Phase, p.Status.Reason, p.Status.Message, want)
	})
	return p
}

// buildWasm compiles a Go program for WASI preview 1.
func buildWasm(t *testing.T, pkgDir string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkgDir)+".wasm")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", out, ".")
	cmd.Dir = pkgDir
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkgDir, err, b)
	}
	return out
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDevHello is the walking skeleton end to end: dev mode, the hello
// example applied from its manifest, Succeeded, and its greeting in the logs.
func TestDevHello(t *testing.T) {
	c := startDev(t)
	hello := buildWasm(t, "../../examples/hello")
	c.mustSkiff("image", "import", "--data-dir", c.dataDir, "hello", hello)

	if out := c.mustSkiff("apply", "-f", "../../examples/hello/pod.yaml"); !strings.Contains(out, "pod/hello created") {
		t.Errorf("apply printed %q, want pod/hello created", out)
	}
	p := c.waitPhase("hello", "Succeeded", "Failed")
	if p.Status.Phase != "Succeeded" {
		t.Fatalf("hello is %s: %s %s", p.Status.Phase, p.Status.Reason, p.Status.Message)
	}
	if p.Spec.NodeName != "node-1" {
		t.Errorf("hello ran on %q, want node-1", p.Spec.NodeName)
	}
	if js := c.mustSkiff("get", "pod", "hello", "-o", "json"); !strings.Contains(js, `"exitCode": 0`) || !strings.Contains(js, `"restartCount": 0`) {
		t.Errorf("skiff get pod hello -o json does not show exitCode 0 and restartCount 0:\n%s", js)
	}
	table := c.mustSkiff("get", "pods")
	if !strings.Contains(table, "hello") || !strings.Contains(table, "Succeeded") {
		t.Errorf("skiff get pods:\n%s\nwant hello Succeeded", table)
	}
	if logs := c.mustSkiff("logs", "hello"); logs != "Hello, skiff! This is a WebAssembly module running in a skiff pod.\n" {
		t.Errorf("skiff logs hello = %q", logs)
	}
	if out := c.mustSkiff("apply", "-f", "../../examples/hello/pod.yaml"); !strings.Contains(out, "pod/hello unchanged") {
		t.Errorf("second apply printed %q, want unchanged", out)
	}
	nodes := c.mustSkiff("get", "nodes")
	if !strings.Contains(nodes, "node-1") || !strings.Contains(nodes, "Ready") || !strings.Contains(nodes, "wasm") {
		t.Errorf("skiff get nodes:\n%s", nodes)
	}

	// Deleting the pod removes its sandbox from the node.
	c.mustSkiff("delete", "pod", "hello")
	if _, err := c.skiff("get", "pod", "hello"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("get after delete: %v, want not found", err)
	}
	c.waitSandboxes(0)
}

// waitSandboxes waits until the node's CRI server has n pod sandboxes.
func (c *cluster) waitSandboxes(n int) {
	c.t.Helper()
	got := -1
	eventually(c.t, 30*time.Second, func() bool { got = len(c.sandboxes()); return got == n },
		func() string { return fmt.Sprintf("node has %d sandboxes, want %d", got, n) })
}

// sandboxes lists the node's pod sandboxes through CRI.
func (c *cluster) sandboxes() []*runtimeapi.PodSandbox {
	c.t.Helper()
	conn, err := grpc.NewClient("unix://"+c.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	defer conn.Close()
	res, err := runtimeapi.NewRuntimeServiceClient(conn).ListPodSandbox(context.Background(), &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		c.t.Fatal(err)
	}
	return res.Items
}

// TestDevBadInput shows that bad manifests get an error naming the field
// and apply nothing, and that a broken module fails its pod with a reason
// while the node keeps running other pods.
func TestDevBadInput(t *testing.T) {
	c := startDev(t)
	c.mustSkiff("image", "import", "--data-dir", c.dataDir, "hello", buildWasm(t, "../../examples/hello"))
	c.mustSkiff("image", "import", "--data-dir", c.dataDir, "ticker", buildWasm(t, "testdata/ticker"))

	good := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: first\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: hello\n"
	tests := []struct {
		name     string
		manifest string
		want     string
	}{
		{"unknown field", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\nspec:\n  containers:\n  - name: c\n    image: hello\n    imagePullPolicy: Always\n",
			"spec.containers[0].imagePullPolicy: unknown field"},
		{"invalid name", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\nspec:\n  containers:\n  - name: c\n    image: hello\n",
			`metadata.name: invalid value "Bad_Name"`},
		{"missing image", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\nspec:\n  containers:\n  - name: c\n",
			"spec.containers[0].image: required value"},
		{"YAML that does not parse", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\nspec:\n  containers:\n  - name: c\n    image: [hello\n",
			"invalid YAML: yaml: line 8"},
		{"wrong type", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\nspec:\n  containers:\n  - name: c\n    image: hello\n    args: run\n",
			"spec.containers[0].args: invalid type: want a list"},
		{"unsupported kind", "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: bad\n", `kind: unsupported value "StatefulSet"`},
		{"second document bad", good + "---\n" + "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\nspec:\n  containers:\n  - name: c\n    image: hello\n  restartPolicy: Sometimes\n",
			`spec.restartPolicy: unsupported value "Sometimes"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := c.skiff("apply", "-f", writeFile(t, "pod.yaml", tt.manifest))
			if err == nil {
				t.Fatalf("apply succeeded (%q), want an error with %q", out, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("apply error %q does not contain %q", err, tt.want)
			}
			if list := c.mustSkiff("get", "pods"); !strings.Contains(list, "No pods found") {
				t.Errorf("after a failed apply the cluster has pods:\n%s", list)
			}
		})
	}

	// A module that does not compile fails its pod; the ticker beside it
	// keeps running and new pods still run.
	c.mustSkiff("apply", "-f", writeFile(t, "ticker.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ticker\nspec:\n  containers:\n  - name: ticker\n    image: ticker\n"))
	c.waitPhase("ticker", "Running")
	broken := writeFile(t, "broken.wasm", "\x00asm\x01\x00\x00\x00\xff\xff\xff\xffthis is not a module")
	c.mustSkiff("image", "import", "--data-dir", c.dataDir, "broken", broken)
	c.mustSkiff("apply", "-f", writeFile(t, "broken.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: broken\nspec:\n  containers:\n  - name: broken\n    image: broken\n"))
	p := c.waitPhase("broken", "Failed")
	if p.Status.Reason != "CreateContainerError" || !strings.Contains(p.Status.Message, "broken") {
		t.Errorf("broken pod: reason %q message %q, want CreateContainerError naming the container", p.Status.Reason, p.Status.Message)
	}
	if len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].State.Terminated == nil {
		t.Fatalf("broken pod container statuses: %+v", p.Status.ContainerStatuses)
	}
	if c.pod("ticker").Status.Phase != "Running" {
		t.Errorf("ticker stopped running after the broken pod failed")
	}
	c.mustSkiff("apply", "-f", writeFile(t, "after.yaml", strings.Replace(good, "first", "after", 1)))
	c.waitPhase("after", "Succeeded")
	if logs := c.mustSkiff("logs", "ticker"); !strings.Contains(logs, "tick 0\n") {
		t.Errorf("ticker logs = %q, want ticks", logs)
	}
	for _, name := range []string{"ticker", "broken", "after"} {
		c.mustSkiff("delete", "pod", name)
	}
	c.waitSandboxes(0)
}

// TestDevRestart stops dev mode and starts it again on the same data: the
// finished pod keeps its status and logs and is not run again, and the store
// still holds every object.
func TestDevRestart(t *testing.T) {
	dir := t.TempDir()
	t.Cleanup(func() { unmountAll(t, filepath.Join(dir, "state")) })
	c := startDevIn(t, dir)
	c.mustSkiff("image", "import", "--data-dir", c.dataDir, "hello", buildWasm(t, "../../examples/hello"))
	c.mustSkiff("apply", "-f", "../../examples/hello/pod.yaml")
	before := c.waitPhase("hello", "Succeeded")
	c.stop()

	c = startDevIn(t, dir)
	after := c.pod("hello")
	if after.Status.Phase != "Succeeded" || after.Spec.NodeName != before.Spec.NodeName {
		t.Errorf("after restart hello is %q on %q, want Succeeded on %q", after.Status.Phase, after.Spec.NodeName, before.Spec.NodeName)
	}
	if logs := c.mustSkiff("logs", "hello"); !strings.Contains(logs, "Hello, skiff!") {
		t.Errorf("logs after restart = %q", logs)
	}
	// A pod applied after the restart runs to its end: by then the agent
	// has long acted on hello (it lists before it watches), and must not
	// have run it again.
	c.mustSkiff("apply", "-f", writeFile(t, "after.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: after\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: hello\n"))
	c.waitPhase("after", "Succeeded")
	if n := c.containers(); n != 2 {
		t.Errorf("node has %d containers after restart, want the 1 that already ran and after's", n)
	}
	c.mustSkiff("delete", "pod", "hello", "after")
	c.waitSandboxes(0)
}

// containers counts the containers on the node's CRI server.
func (c *cluster) containers() int {
	c.t.Helper()
	conn, err := grpc.NewClient("unix://"+c.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	defer conn.Close()
	res, err := runtimeapi.NewRuntimeServiceClient(conn).ListContainers(context.Background(), &runtimeapi.ListContainersRequest{})
	if err != nil {
		c.t.Fatal(err)
	}
	return len(res.Containers)
}
