package cri

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"skiff.dev/skiff/netns"
	"skiff.dev/skiff/runtime/image"
	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

// crictl runs crictl against one server, as a person at a shell would.
type crictl struct {
	t    *testing.T
	bin  string
	cfg  string
	sock string
}

// run runs crictl with args and returns its stdout and stderr.
func (c crictl) run(args ...string) (string, string, error) {
	c.t.Helper()
	full := append([]string{"--config", c.cfg, "--runtime-endpoint", "unix://" + c.sock, "--image-endpoint", "unix://" + c.sock}, args...)
	cmd := exec.Command(c.bin, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	c.t.Logf("$ crictl %s\n%s%s", strings.Join(args, " "), stdout.String(), stderr.String())
	return stdout.String(), stderr.String(), err
}

// ok runs crictl, fails the test if it fails, and returns its stdout.
func (c crictl) ok(args ...string) string {
	c.t.Helper()
	out, errOut, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("crictl %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// fails runs crictl, expects it to fail, and returns its stderr.
func (c crictl) fails(args ...string) string {
	c.t.Helper()
	out, errOut, err := c.run(args...)
	if err == nil {
		c.t.Fatalf("crictl %s succeeded, want failure:\n%s", strings.Join(args, " "), out)
	}
	return errOut
}

func wantContains(t *testing.T, what, got string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(got, p) {
			t.Errorf("%s: %q does not contain %q", what, got, p)
		}
	}
}

// row returns the line of a crictl table that contains key.
func row(table, key string) string {
	for _, line := range strings.Split(table, "\n") {
		if strings.Contains(line, key) {
			return line
		}
	}
	return ""
}

// TestCrictl drives a real server with crictl over its socket: images,
// pods, containers, logs, and the errors a user sees.
func TestCrictl(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: pods get network namespaces")
	}
	bin, err := exec.LookPath("crictl")
	if err != nil {
		t.Skip("crictl is not in PATH: go install sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0")
	}
	hello := needHello(t)
	tmp := t.TempDir()
	// What `skiff image import` does.
	images, err := image.Open(filepath.Join(tmp, "images"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(hello)
	if err != nil {
		t.Fatal(err)
	}
	img, err := images.Import(context.Background(), "hello", f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := images.Import(context.Background(), "broken", strings.NewReader("\x00asm\x01\x00\x00\x00garbage")); err != nil {
		t.Fatal(err)
	}

	cfg, sock, stateDir := serveCrictl(t, images, tmp)
	logDir := filepath.Join(tmp, "pod-logs")
	podJSON := filepath.Join(tmp, "pod.json")
	os.WriteFile(podJSON, fmt.Appendf(nil, `{
  "metadata": {"name": "hello-pod", "namespace": "default", "uid": "hello-pod-uid", "attempt": 0},
  "log_directory": %q,
  "linux": {}
}`, logDir), 0o644)
	ctrJSON := filepath.Join(tmp, "container.json")
	os.WriteFile(ctrJSON, []byte(`{
  "metadata": {"name": "hello"},
  "image": {"image": "hello"},
  "args": ["sleep", "1h"],
  "envs": [{"key": "GREETING", "value": "Hello"}],
  "log_path": "hello.log",
  "linux": {}
}`), 0o644)
	brokenJSON := filepath.Join(tmp, "broken.json")
	os.WriteFile(brokenJSON, []byte(`{"metadata": {"name": "broken"}, "image": {"image": "broken"}, "log_path": "broken.log"}`), 0o644)

	c := crictl{t: t, bin: bin, cfg: cfg, sock: sock}
	short := func(id string) string { return strings.TrimPrefix(id, "sha256:")[:13] }

	wantContains(t, "crictl version", c.ok("version"), "RuntimeName:  skiff", "RuntimeApiVersion:  v1")
	wantContains(t, "crictl images", row(c.ok("images"), "hello"), "hello", "latest", short(img.ID))
	wantContains(t, "crictl pull hello", c.ok("pull", "hello"), "Image is up to date for "+img.ID)
	wantContains(t, "crictl runp --runtime runc", c.fails("runp", "--runtime", "runc", podJSON), "InvalidArgument", `runtime handler \"runc\" is not available on this node`)

	pod := strings.TrimSpace(c.ok("runp", podJSON))
	if !idPattern.MatchString(pod) {
		t.Fatalf("crictl runp printed %q, want a pod ID", pod)
	}
	wantContains(t, "crictl pods", row(c.ok("pods"), short(pod)), "Ready", "hello-pod", "default")

	wantContains(t, "crictl create broken", c.fails("create", pod, brokenJSON, podJSON), "InvalidArgument", "invalid WebAssembly module")

	ctr := strings.TrimSpace(c.ok("create", pod, ctrJSON, podJSON))
	if !idPattern.MatchString(ctr) {
		t.Fatalf("crictl create printed %q, want a container ID", ctr)
	}
	wantContains(t, "crictl ps -a (created)", row(c.ok("ps", "-a"), short(ctr)), "Created")
	if got := strings.TrimSpace(c.ok("start", ctr)); got != ctr {
		t.Errorf("crictl start printed %q", got)
	}
	// (The POD and NAMESPACE columns come from the kubelet's io.kubernetes.pod.* labels, which crictl create does not set.)
	wantContains(t, "crictl ps", row(c.ok("ps"), short(ctr)), "hello", "Running", short(pod))

	var logs string
	wasmtest.Eventually(t, 10*time.Second, func() bool { logs = c.ok("logs", ctr); return logs != "" },
		func() string { return "crictl logs printed nothing" })
	if logs != "Hello from hello!\n" {
		t.Errorf("crictl logs = %q, want the greeting", logs)
	}

	// A running module's stats: its linear memory and the CPU time it took to start.
	stats := row(c.ok("stats", "--seconds", "1"), short(ctr))
	if f := strings.Fields(stats); len(f) < 4 || !strings.HasSuffix(f[3], "MB") && !strings.HasSuffix(f[3], "kB") {
		t.Errorf("crictl stats row = %q, want the container's memory in kB or MB", stats)
	}
	statsJSON := c.ok("stats", "-o", "json", "--id", ctr)
	wantContains(t, "crictl stats -o json", statsJSON, `"usageCoreNanoSeconds"`, `"workingSetBytes"`)
	if regexp.MustCompile(`"usageCoreNanoSeconds": \{\s*"value": "0"`).MatchString(statsJSON) {
		t.Errorf("crictl stats -o json reports no CPU time:\n%s", statsJSON)
	}

	if got := strings.TrimSpace(c.ok("stop", ctr)); got != ctr {
		t.Errorf("crictl stop printed %q", got)
	}
	wantContains(t, "crictl ps -a (stopped)", row(c.ok("ps", "-a"), short(ctr)), "Exited")
	wantContains(t, "crictl inspect", c.ok("inspect", ctr), `"exitCode": 137`, `"reason": "Error"`, `"message": "stopped"`, filepath.Join(logDir, "hello.log"))
	if row(c.ok("ps"), short(ctr)) != "" {
		t.Error("crictl ps (running only) still lists the stopped container")
	}

	if got := strings.TrimSpace(c.ok("rm", ctr)); got != ctr {
		t.Errorf("crictl rm printed %q", got)
	}
	if row(c.ok("ps", "-a"), short(ctr)) != "" {
		t.Error("crictl ps -a still lists the removed container")
	}

	wantContains(t, "crictl stopp", c.ok("stopp", pod), "Stopped sandbox "+pod)
	wantContains(t, "crictl pods (stopped)", row(c.ok("pods"), short(pod)), "NotReady")
	wantContains(t, "crictl rmp", c.ok("rmp", pod), "Removed sandbox "+pod)
	if row(c.ok("pods"), short(pod)) != "" {
		t.Error("crictl pods still lists the removed pod")
	}
	if pins, _ := netns.List(filepath.Join(stateDir, "netns")); len(pins) != 0 {
		t.Errorf("namespaces left after rmp: %v", pins)
	}
}

// serveCrictl serves CRI over images, its state under tmp, until the test
// ends, waits until the socket answers, and returns the path of a crictl
// config for it, the socket and the state dir. Whatever happens, no
// namespace outlives the test.
func serveCrictl(t *testing.T, images *image.Store, tmp string) (cfg, sock, stateDir string) {
	t.Helper()
	sockDir, err := os.MkdirTemp("", "crictl") // short: a unix socket's path is bounded
	if err != nil {
		t.Fatal(err)
	}
	sock = filepath.Join(sockDir, "cri.sock")
	stateDir = filepath.Join(tmp, "run")
	t.Cleanup(func() { // whatever happens, no namespace outlives the test
		for _, dir := range []string{"netns", "netns/.spare"} {
			pins, _ := netns.List(filepath.Join(stateDir, dir))
			for _, p := range pins {
				netns.Delete(p)
			}
		}
		os.RemoveAll(sockDir)
	})
	srv, err := New(context.Background(), Config{Socket: sock, RootDir: filepath.Join(tmp, "node"), StateDir: stateDir, Images: images, Runtimes: testRuntimes(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
		if err := srv.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	wasmtest.Eventually(t, 10*time.Second, func() bool { _, err := os.Stat(sock); return err == nil },
		func() string { return "the CRI server did not open its socket " + sock })
	// crictl's deadline for each call: a first CreateContainer compiles the
	// module, which under the race detector on a loaded 2-core machine was
	// seen to take over 20 s.
	cfg = filepath.Join(tmp, "crictl.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n", sock, sock), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg, sock, stateDir
}
