package oci

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	skiffrt "skiff.dev/skiff/runtime"
)

// dataLayer makes a layer with data/sub/file, etc/marker and a symbolic
// link, escape, that points out of any root it is in.
func dataLayer(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"data/sub", "etc"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range map[string]string{"data/sub/file": "in the image\n", "etc/marker": "image etc\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/../../../etc", filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// execOut runs args in c and returns its exit code and output.
func execOut(t *testing.T, c *Container, args ...string) (int, string) {
	t.Helper()
	var out syncBuffer
	code, err := c.Exec(context.Background(), skiffrt.Process{Args: args, Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatalf("Exec %q: %v", args, err)
	}
	return int(code), out.String()
}

func TestImageVolume(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	ctx := context.Background()
	busybox, data := busyboxLayer(t), dataLayer(t)
	id := newID(t)
	c, err := r.create(ctx, skiffrt.ContainerSpec{ID: id, Layers: []string{busybox}, Args: []string{"sleep", "1000"},
		ImageMounts: []skiffrt.ImageMount{
			{Layers: []string{busybox, data}, SubPath: "data", ContainerPath: "/mnt/sub"},
			{Layers: []string{data}, ContainerPath: "/mnt/whole"},
			{Layers: []string{busybox, data}, SubPath: "escape", ContainerPath: "/mnt/escape"},
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeContainer(t, c) })
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mi), "lowerdir="+data) {
		t.Errorf("no overlay on the node names the layer %s as a lowerdir (the image store would not see it in use)", data)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"cat", "/mnt/sub/sub/file"}, 0, "in the image\n"},
		{[]string{"cat", "/mnt/whole/data/sub/file"}, 0, "in the image\n"},
		{[]string{"cat", "/mnt/escape/marker"}, 0, "image etc\n"}, // the image's /etc, not the node's
		{[]string{"sh", "-c", "ls /mnt/sub/sub/file /mnt/sub/data 2>/dev/null"}, 1, "/mnt/sub/sub/file\n"},
		{[]string{"touch", "/mnt/sub/new"}, 1, "touch: /mnt/sub/new: Read-only file system\n"},
		{[]string{"touch", "/mnt/whole/new"}, 1, "touch: /mnt/whole/new: Read-only file system\n"},
		{[]string{"/mnt/escape/../../mnt/sub/../../bin/true"}, 0, ""},
	} {
		code, out := execOut(t, c, tc.args...)
		if code != tc.code || out != tc.out {
			t.Errorf("%q: exit %d, output %q; want %d, %q", tc.args, code, out, tc.code, tc.out)
		}
	}
	if err := c.Stop(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(r, id); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	for _, p := range []string{"data/sub/file", "etc/marker"} {
		if _, err := os.Stat(filepath.Join(data, p)); err != nil {
			t.Errorf("the layer lost %s: %v", p, err)
		}
	}
}

func TestImageVolumeRefused(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	busybox, data := busyboxLayer(t), dataLayer(t)
	for _, tc := range []struct {
		name string
		m    skiffrt.ImageMount
		want string
	}{
		{"dot dot", skiffrt.ImageMount{Layers: []string{data}, SubPath: "data/../..", ContainerPath: "/v"}, `imageMounts[0].subPath "data/../..": want a path without ".."`},
		{"absolute", skiffrt.ImageMount{Layers: []string{data}, SubPath: "/data", ContainerPath: "/v"}, `imageMounts[0].subPath "/data": want a path relative`},
		{"unclean", skiffrt.ImageMount{Layers: []string{data}, SubPath: "data/", ContainerPath: "/v"}, `imageMounts[0].subPath "data/": want a clean path`},
		{"missing", skiffrt.ImageMount{Layers: []string{data}, SubPath: "not-there", ContainerPath: "/v"}, `subPath "not-there": not in the image`},
		{"a file", skiffrt.ImageMount{Layers: []string{data}, SubPath: "etc/marker", ContainerPath: "/v"}, `subPath "etc/marker": not a directory`},
		{"no layers", skiffrt.ImageMount{ContainerPath: "/v"}, "imageMounts[0].layers: the image has no layers"},
		{"relative path", skiffrt.ImageMount{Layers: []string{data}, ContainerPath: "v"}, `imageMounts[0].containerPath "v"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := newID(t)
			_, err := r.create(context.Background(), skiffrt.ContainerSpec{ID: id, Layers: []string{busybox}, Args: []string{"true"},
				ImageMounts: []skiffrt.ImageMount{tc.m}})
			if !errors.Is(err, skiffrt.ErrInvalidSpec) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Create: %v; want ErrInvalidSpec saying %q", err, tc.want)
			}
			if left := leftovers(r, id); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
		})
	}
}

// TestAdoptImageVolume: a container with an image volume, created by a
// node process that then dies, is adopted with its volume still mounted,
// and Remove unmounts it.
func TestAdoptImageVolume(t *testing.T) {
	needRoot(t)
	root, layer := t.TempDir(), busyboxLayer(t)
	r := newRuntime(t, root)
	ctx := context.Background()
	id := newID(t)
	t.Cleanup(func() { r.removeBundle(ctx, id, cgroup{fs: r.cgroups, path: cgroupsPath(testCgroupParent, id)}) })
	runNode(t, "imagevol", root, layer, id)
	c, err := r.adopt(ctx, skiffrt.ContainerSpec{ID: id, Layers: []string{layer}})
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	t.Cleanup(func() { removeContainer(t, c) })
	if code, out := execOut(t, c, "cat", "/mnt/vol/passwd"); code != 0 || !strings.HasPrefix(out, "root:x:0:0:") {
		t.Errorf("cat /mnt/vol/passwd after adoption: exit %d, %q; want the image's /etc/passwd", code, out)
	}
	if err := c.Stop(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(r, id); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}
