package proxy

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"skiff.dev/skiff/netns"
)

// requireRoot skips a test that needs root and the iptables tools.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces and program iptables in them")
	}
	for _, tool := range []string{"iptables", "iptables-restore", "iptables-save"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not found: %v", tool, err)
		}
	}
}

// newNS creates a network namespace for the test, deleted when it ends.
func newNS(t testing.TB, dir, name string) string {
	t.Helper()
	path, err := netns.Create(dir, name)
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := netns.Delete(path); err != nil {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	return path
}

// inNS returns the Config.InNetNS that enters the namespace at path.
func inNS(path string) func(func() error) error {
	return func(fn func() error) error { return netns.Do(path, fn) }
}

// nsDir returns a short directory for namespace pins.
func nsDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "skiff-proxy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Clean(dir)
}

// runIn runs a command inside the namespace and returns its output.
func runIn(t testing.TB, path string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, stderr bytes.Buffer
	err := netns.Do(path, func() error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Stdout, cmd.Stderr = &out, &stderr
		return cmd.Run()
	})
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out.String()
}

// iptablesSave returns the namespace's rules without the comment lines
// that carry a timestamp, and with counters zeroed.
func iptablesSave(t testing.TB, path string) string {
	t.Helper()
	var b strings.Builder
	for line := range strings.Lines(runIn(t, path, "iptables-save")) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, ":") {
			if i := strings.LastIndex(line, " ["); i > 0 {
				line = line[:i] + " [0:0]\n"
			}
		}
		b.WriteString(line)
	}
	return b.String()
}
