package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/runtime/image/imagetest"
)

// mixedPod has a Wasm server and three OCI containers in one pod: a
// client that fetches the Wasm server's page over localhost, a busybox
// httpd, and a memory hog under a 32Mi limit.
const mixedPod = `apiVersion: v1
kind: Pod
metadata:
  name: mixed
spec:
  containers:
  - name: web
    image: server
    args: ["wasm-web"]
    ports:
    - containerPort: 8080
  - name: client
    image: busybox
    command: ["sh", "-c", "while :; do wget -q -O - http://127.0.0.1:8080/ || echo fetch failed; sleep 0.3; done"]
  - name: httpd
    image: busybox
    command: ["sh", "-c", "mkdir -p /tmp/www && echo oci-page > /tmp/www/index.html && exec httpd -f -p 8081 -h /tmp/www"]
    ports:
    - containerPort: 8081
  - name: hog
    image: busybox
    command: ["sh", "-c", "x=aaaaaaaa; while :; do x=$x$x; done"]
    resources:
      limits: {memory: 32Mi}
`

// TestOCIAndWasmPod: one pod mixes a Wasm module and OCI containers in one
// network namespace. The OCI client reaches the Wasm server on localhost;
// skiff exec (with a terminal too) and skiff port-forward work against
// the OCI containers; the memory hog ends OOMKilled while its neighbours
// run on; and when the node process is killed with SIGKILL and started
// again, it adopts the OCI containers that kept running (same container
// IDs, no restart) and their output goes on reaching their logs.
func TestOCIAndWasmPod(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: OCI containers run in runc, each pod in a network namespace of its own")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("needs runc (Debian package runc; `go tool task deps` installs it)")
	}
	archive := filepath.Join(t.TempDir(), "busybox.tar")
	if err := os.WriteFile(archive, imagetest.DockerArchive(t, "busybox:latest", imagetest.BusyboxImage(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The OCI containers outlive the node by design. The test removes its
	// pod through the node; should it fail first, this removes what runc
	// still runs (registered first: it runs after the node is killed).
	t.Cleanup(func() { removeOCILeftovers(t, filepath.Join(dir, "data")) })
	n := startNodeProc(t, dir)
	n.c.mustSkiff("image", "import", "--data-dir", n.dataDir, "server", buildWasm(t, "../../runtime/wasm/testdata/server"))
	n.c.mustSkiff("image", "import", "--data-dir", n.dataDir, "busybox", archive)
	n.c.mustSkiff("apply", "-f", writeFile(t, "mixed.yaml", mixedPod))

	// The OCI client fetches the Wasm server's page on localhost.
	logs := func(ctr string) string { out, _ := n.c.skiff("logs", "mixed", "-c", ctr); return out }
	eventually(t, 60*time.Second, func() bool { return strings.Contains(logs("client"), "wasm-web 8080") },
		func() string { return "the client's log: " + logs("client") + "\npod: " + n.podSummary("mixed") })

	// The hog ends OOMKilled; its neighbours run on, never restarted.
	eventually(t, 60*time.Second, func() bool {
		st := n.containerStatus("mixed", "hog")
		return st.GetLastState().GetTerminated().GetReason() == "OOMKilled" || st.GetState().GetTerminated().GetReason() == "OOMKilled"
	}, func() string { return "the hog did not end OOMKilled: " + n.podSummary("mixed") })
	before := map[string]string{}
	for _, name := range []string{"client", "httpd"} {
		st := n.containerStatus("mixed", name)
		if st.GetState().GetRunning() == nil || st.GetRestartCount() != 0 {
			t.Fatalf("%s is not running on, unrestarted, beside the hog: %s", name, n.podSummary("mixed"))
		}
		before[name] = st.GetContainerId()
	}

	// skiff exec: output, and the command's exit code as skiff's.
	if out := n.c.mustSkiff("exec", "mixed", "-c", "client", "--", "id", "-u"); out != "0\n" {
		t.Errorf("skiff exec id -u printed %q, want 0", out)
	}
	if out := n.c.mustSkiff("exec", "mixed", "-c", "httpd", "--", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/"); out != "wasm-web 8080\n" {
		t.Errorf("skiff exec wget of the Wasm server printed %q", out)
	}
	var ee exitError
	if out, err := n.c.skiff("exec", "mixed", "-c", "client", "--", "sh", "-c", "echo bye; exit 3"); !errors.As(err, &ee) || ee.code != 3 || out != "bye\n" {
		t.Errorf("skiff exec of exit 3: %q, %v; want exit code 3", out, err)
	}
	checkExecTTY(t, n.c, "mixed", "client")

	// skiff port-forward reaches the OCI httpd.
	if got := portForwardGet(t, n.c, "mixed", "8081"); !strings.Contains(got, "oci-page") {
		t.Errorf("GET through skiff port-forward :8081 = %q", got)
	}

	// The node dies with SIGKILL and comes back: the OCI containers are
	// adopted, with their IDs and no restart; the Wasm server, which died
	// with the process, is restarted; the client's log goes on.
	n.p.kill()
	n.start()
	n.waitAPI()
	mark := strings.Count(logs("client"), "wasm-web 8080")
	eventually(t, 90*time.Second, func() bool {
		for name, id := range before {
			st := n.containerStatus("mixed", name)
			if st.GetContainerId() != id || st.GetState().GetRunning() == nil || st.GetRestartCount() != 0 {
				return false
			}
		}
		web := n.containerStatus("mixed", "web")
		return web.GetState().GetRunning() != nil && strings.Count(logs("client"), "wasm-web 8080") > mark+2
	}, func() string {
		return fmt.Sprintf("after the restart, want client and httpd adopted as %v and the client fetching again:\n%s\nclient log tail: %s",
			before, n.podSummary("mixed"), tail(logs("client"), 5))
	})
	if !strings.Contains(n.out.String(), "container adopted") {
		t.Error("the node's log does not say it adopted a container")
	}
	if got := portForwardGet(t, n.c, "mixed", "8081"); !strings.Contains(got, "oci-page") {
		t.Errorf("after the restart, GET through skiff port-forward :8081 = %q", got)
	}

	// skiff bench cri starts and removes OCI pods through the CRI socket.
	out := n.c.mustSkiff("bench", "cri", "--endpoint", "unix://"+n.socket, "--image", "busybox", "--runs", "2")
	if !regexp.MustCompile(`all three\s+\d+\.\d+ms`).MatchString(out) {
		t.Errorf("skiff bench cri printed:\n%s", out)
	}

	// Deleting the pod removes its OCI containers: no process, rootfs
	// mount or runc state is left.
	n.c.mustSkiff("delete", "pod", "mixed")
	runcRoot := filepath.Join(n.dataDir, "node", "cri", "oci", "runc")
	eventually(t, 60*time.Second, func() bool { return len(runcContainers(t, runcRoot)) == 0 && len(overlayMounts(t, n.dataDir)) == 0 },
		func() string {
			return fmt.Sprintf("after the pod's deletion, runc still has %v and overlays %v are mounted", runcContainers(t, runcRoot), overlayMounts(t, n.dataDir))
		})
}

// runcContainers lists the containers runc keeps state of under root.
func runcContainers(t *testing.T, root string) []string {
	entries, err := os.ReadDir(root)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.Name())
	}
	return ids
}

// overlayMounts lists the overlay mounts under dir.
func overlayMounts(t *testing.T, dir string) []string {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[2] == "overlay" && strings.HasPrefix(f[1], dir) {
			out = append(out, f[1])
		}
	}
	return out
}

// removeOCILeftovers kills and deletes what runc still runs under the
// node's data directory, and unmounts its overlays.
func removeOCILeftovers(t *testing.T, dataDir string) {
	runcRoot := filepath.Join(dataDir, "node", "cri", "oci", "runc")
	for _, id := range runcContainers(t, runcRoot) {
		if out, err := exec.Command("runc", "--root", runcRoot, "delete", "--force", id).CombinedOutput(); err != nil {
			t.Logf("runc delete --force %s: %v: %s", id, err, out)
		}
	}
	for _, m := range overlayMounts(t, dataDir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", m, err)
		}
	}
}

// containerStatus reads one container's status from the API (empty when
// the pod or container is not there yet).
func (n *nodeProc) containerStatus(pod, name string) *skiffv1.ContainerStatus {
	p, err := n.getPod(pod)
	if err != nil || p == nil {
		return &skiffv1.ContainerStatus{}
	}
	for _, cs := range p.GetStatus().GetContainerStatuses() {
		if cs.GetName() == name {
			return cs
		}
	}
	return &skiffv1.ContainerStatus{}
}

// podSummary is a pod's phase and containers' states, for failures.
func (n *nodeProc) podSummary(pod string) string {
	p, err := n.getPod(pod)
	if err != nil || p == nil {
		return fmt.Sprintf("pod %s: %v (missing: %v)", pod, err, p == nil)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "phase %s", p.GetStatus().GetPhase())
	for _, cs := range p.GetStatus().GetContainerStatuses() {
		fmt.Fprintf(&b, "\n  %s id=%.12s restarts=%d state=%v last=%v", cs.GetName(), cs.GetContainerId(), cs.GetRestartCount(), cs.GetState(), cs.GetLastState())
	}
	return b.String()
}

// portForwardGet runs skiff port-forward POD :PORT, sends one GET through
// it and returns the response.
func portForwardGet(t *testing.T, c *cluster, pod, port string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &lineWriter{}
	root := newRoot()
	root.SetOut(out)
	root.SetErr(out)
	root.SetArgs([]string{"--server", c.server, "--config", c.config, "port-forward", pod, ":" + port})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("skiff port-forward: %v", err)
		}
	}()
	re := regexp.MustCompile(`Forwarding from (127\.0\.0\.1:\d+) -> ` + port)
	var local string
	eventually(t, 10*time.Second, func() bool {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			local = m[1]
		}
		return local != ""
	}, func() string { return "skiff port-forward printed " + out.String() })
	conn, err := net.DialTimeout("tcp", local, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "GET / HTTP/1.0\r\nHost: "+pod+"\r\n\r\n")
	b, _ := io.ReadAll(conn)
	return string(b)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
