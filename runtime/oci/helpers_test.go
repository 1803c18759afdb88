package oci

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	skiffrt "skiff.dev/skiff/runtime"
)

// testCgroupParent keeps the tests' cgroups apart from a node's.
const testCgroupParent = "skiff-oci-test"

// needRoot skips a test that needs root, runc and busybox, saying which
// is missing.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("skipped: needs root (overlayfs, runc, cgroups)")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("skipped: runc not found (install the Debian package runc)")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("skipped: /bin/busybox not found (install the Debian package busybox-static)")
	}
}

// busyboxLayer makes a one-layer image from /bin/busybox: its applets,
// /etc/passwd with root and user (1000), /etc/group with staff (50)
// listing user.
func busyboxLayer(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"bin", "etc", "tmp", "home/user", "proc", "sys", "dev"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(dir, "tmp"), 0o1777)
	src, err := os.Open("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(filepath.Join(dir, "bin/busybox"), os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	for _, a := range []string{"sh", "echo", "sleep", "cat", "nc", "id", "pwd", "hostname", "true", "false", "ls", "env", "kill", "grep", "mount", "touch", "wc"} {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
		"etc/group":  "root:x:0:\nstaff:x:50:user\nuser:x:1000:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func newRuntime(t testing.TB, root string) *Runtime {
	t.Helper()
	r, err := New(Config{Root: root, CgroupParent: testCgroupParent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	return r
}

// newID is a container ID unique on the machine (the cgroups are shared).
func newID(t testing.TB) string {
	b := make([]byte, 4)
	rand.Read(b)
	name := regexp.MustCompile(`[^A-Za-z0-9_.-]`).ReplaceAllString(t.Name(), "_")
	return fmt.Sprintf("%s-%s", name, hex.EncodeToString(b))
}

// create creates a container and removes it when the test ends.
func create(t testing.TB, r *Runtime, spec skiffrt.ContainerSpec) *Container {
	t.Helper()
	c, err := r.create(context.Background(), spec)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { removeContainer(t, c) })
	return c
}

func removeContainer(t testing.TB, c *Container) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Stop(ctx, 0); err != nil {
		t.Errorf("Stop in cleanup: %v", err)
	}
	if err := c.Remove(ctx); err != nil {
		t.Errorf("Remove in cleanup: %v", err)
	}
}

// run creates and starts a container and waits for its end.
func run(t testing.TB, r *Runtime, spec skiffrt.ContainerSpec) (*Container, skiffrt.Status) {
	t.Helper()
	c := create(t, r, spec)
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitDone(t, c, 30*time.Second)
	return c, c.Status()
}

func waitDone(t testing.TB, c *Container, d time.Duration) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(d):
		t.Fatalf("container %s has not ended within %v: %+v", c.id, d, c.Status())
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// leftovers lists what container id left on the node: mounts, bundle,
// cgroup directories, runc state.
func leftovers(r *Runtime, id string) []string {
	var left []string
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil && strings.Contains(string(mi), r.bundle(id)) {
		left = append(left, "a mount under the bundle")
	}
	if _, err := os.Stat(r.bundle(id)); err == nil {
		left = append(left, "the bundle "+r.bundle(id))
	}
	cg := cgroup{fs: r.cgroups, path: cgroupsPath(r.cgroupParent, id)}
	if cg.exists() {
		left = append(left, "the cgroup "+cg.path)
	}
	if _, err := os.Stat(filepath.Join(r.runcRoot, id)); err == nil {
		left = append(left, "runc's state")
	}
	return left
}
