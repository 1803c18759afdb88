package cri

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"skiff.dev/skiff/runtime/image"
	"skiff.dev/skiff/runtime/image/imagetest"
	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

// TestCrictlPulledLife drives the whole life of a Wasm container whose
// image comes from a registry, with crictl: pull, runp, create, start, ps,
// inspect, stats, logs, stop, rm, stopp, rmp, rmi.
func TestCrictlPulledLife(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: pods get network namespaces")
	}
	bin, err := exec.LookPath("crictl")
	if err != nil {
		t.Skip("crictl is not in PATH: go install sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0")
	}
	module, err := os.ReadFile(needHello(t))
	if err != nil {
		t.Fatal(err)
	}
	reg := imagetest.NewRegistry(t)
	ref := reg.Push("demo/hello:v1", imagetest.WasmArtifact(t, module))

	tmp := t.TempDir()
	images, err := image.Open(filepath.Join(tmp, "images"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, sock, _ := serveCrictl(t, images, tmp)
	logDir := filepath.Join(tmp, "pod-logs")
	podJSON := filepath.Join(tmp, "pod.json")
	os.WriteFile(podJSON, fmt.Appendf(nil, `{"metadata": {"name": "pulled-pod", "namespace": "default", "uid": "pulled-uid"}, "log_directory": %q, "linux": {}}`, logDir), 0o644)
	ctrJSON := filepath.Join(tmp, "container.json")
	os.WriteFile(ctrJSON, fmt.Appendf(nil, `{"metadata": {"name": "hello"}, "image": {"image": %q}, "args": ["sleep", "1h"],
  "envs": [{"key": "GREETING", "value": "Hello"}], "log_path": "hello.log", "linux": {}}`, ref), 0o644)

	c := crictl{t: t, bin: bin, cfg: cfg, sock: sock}
	short := func(id string) string { return strings.TrimPrefix(id, "sha256:")[:13] }

	wantContains(t, "crictl pull unknown tag", c.fails("pull", reg.Host+"/demo/hello:nope"), "NotFound", reg.Host+"/demo/hello:nope")
	wantContains(t, "crictl pull", c.ok("pull", ref), "Image is up to date for sha256:")
	img, err := images.Get(ref)
	if err != nil {
		t.Fatal(err)
	}
	wantContains(t, "crictl images", row(c.ok("images"), "demo/hello"), reg.Host+"/demo/hello", "v1", short(img.ID))
	wantContains(t, "crictl inspecti", c.ok("inspecti", ref), img.ID, reg.Host+"/demo/hello@sha256:")

	pod := strings.TrimSpace(c.ok("runp", podJSON))
	ctr := strings.TrimSpace(c.ok("create", pod, ctrJSON, podJSON))
	if !idPattern.MatchString(ctr) {
		t.Fatalf("crictl create printed %q, want a container ID", ctr)
	}
	c.ok("start", ctr)
	wantContains(t, "crictl ps", row(c.ok("ps"), short(ctr)), "hello", "Running", short(pod))
	wantContains(t, "crictl inspect", c.ok("inspect", ctr), `"state": "CONTAINER_RUNNING"`, img.ID)
	// Stats: the module's linear memory and the CPU time it has used, both
	// above zero.
	wantContains(t, "crictl stats", row(c.ok("stats", "--id", ctr), short(ctr)), "hello")
	statsJSON := c.ok("stats", "-o", "json", "--id", ctr)
	for _, zero := range []string{`"workingSetBytes": \{\s*"value": "0"`, `"usageCoreNanoSeconds": \{\s*"value": "0"`} {
		if regexp.MustCompile(zero).MatchString(statsJSON) || !regexp.MustCompile(strings.Split(zero, ":")[0]).MatchString(statsJSON) {
			t.Errorf("crictl stats -o json: want %s above zero:\n%s", strings.Split(zero, ":")[0], statsJSON)
		}
	}

	var logs string
	wasmtest.Eventually(t, 10*time.Second, func() bool {
		logs = c.ok("logs", ctr)
		return logs != ""
	}, func() string { return "timed out waiting until crictl logs shows the container's output" })
	if logs != "Hello from hello!\n" {
		t.Errorf("crictl logs = %q, want the greeting", logs)
	}

	c.ok("stop", ctr)
	wantContains(t, "crictl ps -a (stopped)", row(c.ok("ps", "-a"), short(ctr)), "Exited")
	c.ok("rm", ctr)
	wantContains(t, "crictl stopp", c.ok("stopp", pod), "Stopped sandbox "+pod)
	wantContains(t, "crictl rmp", c.ok("rmp", pod), "Removed sandbox "+pod)
	wantContains(t, "crictl rmi", c.ok("rmi", ref), "Deleted: "+ref)
	if row(c.ok("images"), "demo/hello") != "" {
		t.Error("crictl images still lists the removed image")
	}
}
