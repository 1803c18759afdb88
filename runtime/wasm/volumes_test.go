package wasm

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

var (
	fsguestOnce sync.Once
	fsguestPath string
	fsguestErr  error
)

// needFSGuest builds testdata/fsguest once, next to the guest (TestMain
// removes that directory).
func needFSGuest(t *testing.T) string {
	t.Helper()
	fsguestOnce.Do(func() {
		fsguestPath = filepath.Join(filepath.Dir(guestPath), "fsguest.wasm")
		fsguestErr = wasmtest.BuildGo("testdata/fsguest", fsguestPath)
	})
	if fsguestErr != nil {
		t.Fatal(fsguestErr)
	}
	return fsguestPath
}

// runFS runs fsguest with the mounts and steps and returns its stdout lines.
func runFS(t *testing.T, mounts []Mount, steps ...string) map[string]string {
	t.Helper()
	r := newRuntime(t, Config{})
	var stdout, stderr syncBuffer
	c, err := r.Create(context.Background(), ContainerSpec{
		ID: "fs", ImageID: "fsguest", ImagePath: needFSGuest(t),
		Args: append([]string{"fsguest"}, steps...), Mounts: mounts,
		Stdout: &stdout, Stderr: &stderr,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := waitDone(t, c); st.ExitCode != 0 {
		t.Fatalf("fsguest exited %+v; stderr %q", st, stderr.String())
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		step, res, _ := strings.Cut(line, ": ")
		got[step] = strings.TrimSpace(res)
	}
	return got
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// TestMountsConfine runs a module with a read-write and a read-only mount:
// it reads and writes what is declared, and every way out (.., an absolute
// host path, links leading out, links it makes to lead out) and every
// write to the read-only mount fails.
func TestMountsConfine(t *testing.T) {
	tmp := t.TempDir()
	secret := filepath.Join(tmp, "outside", "secret.txt")
	writeFile(t, secret, "secret")
	host := filepath.Join(tmp, "host")
	writeFile(t, filepath.Join(host, "data.txt"), "hello")
	writeFile(t, filepath.Join(host, "sub", "keep.txt"), "kept")
	symlink(t, "../outside", filepath.Join(host, "link-out"))
	symlink(t, secret, filepath.Join(host, "abs-link"))
	symlink(t, "sub/../../outside/secret.txt", filepath.Join(host, "sneaky"))
	symlink(t, "data.txt", filepath.Join(host, "link-in"))
	symlink(t, "../data.txt", filepath.Join(host, "sub", "up"))
	ro := filepath.Join(tmp, "ro")
	writeFile(t, filepath.Join(ro, "r.txt"), "read-only")

	got := runFS(t, []Mount{{HostPath: host, ContainerPath: "/data"}, {HostPath: ro, ContainerPath: "/ro", ReadOnly: true}},
		"read", "/data/data.txt",
		"read", "/data/link-in",
		"read", "/data/sub/up",
		"read", "/ro/r.txt",
		"write", "/data/new.txt", "fresh",
		"symlink", "sub/keep.txt", "/data/made-in",
		"read", "/data/made-in",
		// Ways out.
		"read", "/data/../outside/secret.txt",
		"read", "../outside/secret.txt",
		"read", secret,
		"read", "/data/link-out/secret.txt",
		"read", "/data/abs-link",
		"read", "/data/sneaky",
		"symlink", "../outside", "/data/made-out",
		"symlink", "/", "/data/made-abs",
		// Read-only.
		"write", "/ro/r.txt", "overwritten",
		"write", "/ro/new.txt", "x",
	)
	want := map[string]string{
		"read /data/data.txt":              "ok hello",
		"read /data/link-in":               "ok hello",
		"read /data/sub/up":                "ok hello",
		"read /ro/r.txt":                   "ok read-only",
		"write /data/new.txt":              "ok",
		"symlink /data/made-in":            "ok",
		"read /data/made-in":               "ok kept",
		"read /data/../outside/secret.txt": "error",
		"read ../outside/secret.txt":       "error",
		"read " + secret:                   "error",
		"read /data/link-out/secret.txt":   "error",
		"read /data/abs-link":              "error",
		"read /data/sneaky":                "error",
		"symlink /data/made-out":           "error",
		"symlink /data/made-abs":           "error",
		"write /ro/r.txt":                  "error",
		"write /ro/new.txt":                "error",
	}
	for step, w := range want {
		if got[step] != w {
			t.Errorf("%s: got %q, want %q", step, got[step], w)
		}
	}
	if b, err := os.ReadFile(filepath.Join(host, "new.txt")); err != nil || string(b) != "fresh" {
		t.Errorf("host file written by the guest: %q, %v", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(ro, "r.txt")); string(b) != "read-only" {
		t.Errorf("read-only file changed to %q", b)
	}
	if _, err := os.Lstat(filepath.Join(ro, "new.txt")); err == nil {
		t.Error("a file was created in the read-only mount")
	}
	for _, l := range []string{"made-out", "made-abs"} {
		if _, err := os.Lstat(filepath.Join(host, l)); err == nil {
			t.Errorf("escaping link %s was made", l)
		}
	}
}

// TestNoMountsNoFilesystem: without mounts, nothing is reachable.
func TestNoMountsNoFilesystem(t *testing.T) {
	got := runFS(t, nil, "read", "/etc/hostname", "write", "/tmp/x", "y")
	if got["read /etc/hostname"] != "error" || got["write /tmp/x"] != "error" {
		t.Errorf("without mounts: %v", got)
	}
}

func TestMountsRefused(t *testing.T) {
	r := newRuntime(t, Config{})
	for name, m := range map[string][]Mount{
		"relative host path": {{HostPath: "rel", ContainerPath: "/d"}},
		"relative guest":     {{HostPath: "/tmp", ContainerPath: "d"}},
		"unclean guest":      {{HostPath: "/tmp", ContainerPath: "/d/../e"}},
		"twice":              {{HostPath: "/tmp", ContainerPath: "/d"}, {HostPath: "/var", ContainerPath: "/d"}},
	} {
		_, err := r.Create(context.Background(), ContainerSpec{ID: name, ImagePath: guestPath, Args: []string{"g"}, Mounts: m})
		if err == nil || !strings.Contains(err.Error(), "mount") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}
