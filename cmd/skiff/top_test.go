package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

// topLine is the row of pod busy in skiff top pods: name, millicores, MiB.
var topLine = regexp.MustCompile(`(?m)^busy\s+(\d+)m\s+(\d+)Mi$`)

// TestTopPods: skiff top pods shows a running Wasm pod's CPU and memory
// as its node measures them, through the API: a module that fills 4 MiB of
// linear memory and then spins shows at least 4Mi and some CPU.
func TestTopPods(t *testing.T) {
	c := startDev(t)
	path := filepath.Join(t.TempDir(), "busy.wasm")
	if err := os.WriteFile(path, wasmtest.Build(wasmtest.Grow(64), wasmtest.Spin()), 0o644); err != nil {
		t.Fatal(err)
	}
	c.mustSkiff("image", "import", "--data-dir", c.dataDir, "busy", path)
	// The budget ends the loop should the test not.
	c.mustSkiff("apply", "-f", writeFile(t, "busy.yaml", `apiVersion: v1
kind: Pod
metadata:
  name: busy
  annotations:
    skiff.dev/cpu-time-budget: 30s
spec:
  restartPolicy: Never
  containers:
  - name: spin
    image: busy
`))
	c.waitPhase("busy", "Running")

	var out string
	var cpu, mem int
	eventually(t, 20*time.Second, func() bool {
		out = c.mustSkiff("top", "pods")
		m := topLine.FindStringSubmatch(out)
		if m == nil {
			return false
		}
		cpu, _ = strconv.Atoi(m[1])
		mem, _ = strconv.Atoi(m[2])
		return mem >= 4
	}, func() string { return "skiff top pods never showed busy with 4Mi or more:\n" + out })
	if !strings.HasPrefix(out, "NAME   CPU(cores)   MEMORY(bytes)\n") {
		t.Errorf("skiff top pods: no kubectl header:\n%s", out)
	}
	if cpu < 1 {
		t.Errorf("skiff top pods: a spinning pod uses %dm of CPU, want some:\n%s", cpu, out)
	}
	t.Logf("skiff top pods:\n%s", out)
	// A figure, not a check: a call within 30 s of the last measures from
	// its kept samples and does not wait.
	start := time.Now()
	c.mustSkiff("top", "pods")
	t.Logf("a second skiff top pods took %v", time.Since(start))

	out = c.mustSkiff("top", "pods", "busy", "--containers")
	if !regexp.MustCompile(`(?m)^POD\s+NAME\s+CPU\(cores\)\s+MEMORY\(bytes\)\nbusy\s+spin\s+\d+m\s+\d+Mi$`).MatchString(out) {
		t.Errorf("skiff top pods busy --containers:\n%s", out)
	}
	out = c.mustSkiff("top", "pods", "-A")
	if !regexp.MustCompile(`(?m)^NAMESPACE\s+NAME\s+CPU\(cores\)\s+MEMORY\(bytes\)\ndefault\s+busy\s+\d+m\s+\d+Mi$`).MatchString(out) {
		t.Errorf("skiff top pods -A:\n%s", out)
	}
	if out, err := c.skiff("top", "pods", "nosuch"); err == nil || !strings.Contains(err.Error(), `pod "default/nosuch" not found`) {
		t.Errorf("skiff top pods nosuch: %v\n%s", err, out)
	}
}

func TestTopPrint(t *testing.T) {
	pod := func(ns, name string, cs ...*skiffv1.ContainerMetrics) *skiffv1.PodMetrics {
		return &skiffv1.PodMetrics{Namespace: ns, Name: name, Containers: cs}
	}
	ctr := func(name string, milli, mib int64) *skiffv1.ContainerMetrics {
		return &skiffv1.ContainerMetrics{Name: name, CpuNanoCores: milli * 1e6, MemoryBytes: mib<<20 + 1000}
	}
	pods := []*skiffv1.PodMetrics{
		pod("a", "db", ctr("main", 250, 40), ctr("side", 5, 1)),
		pod("a", "web", ctr("app", 3, 3)),
		pod("b", "job", ctr("work", 900, 2)),
		pod("b", "idle", &skiffv1.ContainerMetrics{Name: "nap", CpuNanoCores: 1, MemoryBytes: 1 << 19}),
	}
	tests := []struct {
		name string
		o    topOptions
		want string
	}{
		{"pods", topOptions{}, `NAME   CPU(cores)   MEMORY(bytes)
db     255m         41Mi
web    3m           3Mi
job    900m         2Mi
idle   1m           0Mi
`},
		{"by cpu, every namespace", topOptions{all: true, sortBy: "cpu"}, `NAMESPACE   NAME   CPU(cores)   MEMORY(bytes)
b           job    900m         2Mi
a           db     255m         41Mi
a           web    3m           3Mi
b           idle   1m           0Mi
`},
		{"containers by memory", topOptions{containers: true, sortBy: "memory"}, `POD    NAME   CPU(cores)   MEMORY(bytes)
db     main   250m         40Mi
web    app    3m           3Mi
job    work   900m         2Mi
db     side   5m           1Mi
idle   nap    1m           0Mi
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := printTop(&b, pods, tt.o); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", b.String(), tt.want)
			}
		})
	}
}
