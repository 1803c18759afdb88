package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"skiff.dev/skiff/runtime/image"
	"skiff.dev/skiff/runtime/image/imagetest"
	"skiff.dev/skiff/runtime/image/layer"
	"skiff.dev/skiff/runtime/image/layer/layertest"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: unpacking whiteouts (mknod 0/0) and mounting overlays")
	}
}

func layerDigests(t *testing.T, img v1.Image) []string {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d.String())
	}
	return out
}

// blobGets counts the registry's GETs of each blob.
func blobGets(reg *imagetest.Registry) func(digest string) int64 {
	var mu sync.Mutex
	n := map[string]int64{}
	reg.SetWait(func(r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			mu.Lock()
			n[r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]]++
			mu.Unlock()
		}
	})
	return func(d string) int64 {
		mu.Lock()
		defer mu.Unlock()
		return n[d]
	}
}

// tree records every file under root: type, mode, owner, size, a hash of
// the content, link target.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		v := fmt.Sprintf("%v %d:%d %d", fi.Mode(), st.Uid, st.Gid, fi.Size())
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			v += " " + hex.EncodeToString(sum[:8])
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			v += " -> " + l
		case fi.Mode()&fs.ModeCharDevice != 0:
			v += fmt.Sprintf(" dev %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		out[p] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPullLinuxImage(t *testing.T) {
	requireRoot(t)
	reg := imagetest.NewRegistry(t)
	src := imagetest.BusyboxImage(t)
	ref := reg.Push("library/busybox:v1", src)
	s := open(t)
	var mu sync.Mutex
	progress := map[string]image.Progress{}
	img, err := s.PullWithProgress(context.Background(), ref, image.Credentials{}, func(p image.Progress) {
		mu.Lock()
		progress[p.Layer] = p
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	cfgDigest, _ := src.ConfigName()
	got, err := s.Get(ref)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != cfgDigest.String() || img.ID != got.ID || got.MediaType != image.MediaTypeOCI || len(got.Names) != 2 {
		t.Errorf("Get = %+v, want ID %s (the config digest), media type %s, the tag and the digest as names", got, cfgDigest, image.MediaTypeOCI)
	}
	want := image.RunConfig{
		Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hello"},
		WorkingDir: "/tmp", User: "0:0", ExposedPorts: []string{"8080/tcp"}, Labels: map[string]string{"org.skiff.test": "busybox"},
	}
	if got.Config == nil || fmt.Sprintf("%+v", *got.Config) != fmt.Sprintf("%+v", want) {
		t.Errorf("Config = %+v, want %+v", got.Config, want)
	}
	bb, _ := os.ReadFile(imagetest.BusyboxPath)
	if got.Size < int64(len(bb)) {
		t.Errorf("Size = %d, less than busybox's %d bytes", got.Size, len(bb))
	}
	for _, d := range layerDigests(t, src) {
		if p := progress[d]; p.Total == 0 || p.Done != p.Total {
			t.Errorf("last progress of layer %s = %+v, want done", d, p)
		}
	}

	dirs, err := s.Layers(got)
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) != 2 {
		t.Fatalf("Layers = %v, want 2", dirs)
	}
	lower, upper := dirs[0], dirs[1]
	if b, err := os.ReadFile(filepath.Join(lower, "bin/busybox")); err != nil || !bytes.Equal(b, bb) {
		t.Errorf("lower bin/busybox: %d bytes, %v; want the host's busybox", len(b), err)
	}
	for _, a := range imagetest.BusyboxApplets {
		if l, err := os.Readlink(filepath.Join(lower, "bin", a)); err != nil || l != "busybox" {
			t.Errorf("lower bin/%s -> %q, %v", a, l, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(lower, "etc/passwd")); !strings.HasPrefix(string(b), "root:x:0:0:") {
		t.Errorf("lower etc/passwd = %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(upper, "etc/motd")); string(b) != "hello from layer 2\n" {
		t.Errorf("upper etc/motd = %q", b)
	}
	fi, err := os.Lstat(filepath.Join(upper, "etc/gone"))
	if err != nil {
		t.Fatalf("upper etc/gone: %v", err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode()&fs.ModeCharDevice == 0 || st.Rdev != 0 {
		t.Errorf("upper etc/gone is %v rdev %d, want the overlay whiteout (char 0/0)", fi.Mode(), st.Rdev)
	}
	if _, err := os.Lstat(filepath.Join(upper, "etc/.wh.gone")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the tar whiteout name is in the snapshot: %v", err)
	}
	u, err := s.Usage()
	if err != nil || u.UsedBytes < uint64(len(bb)) {
		t.Errorf("Usage = %+v, %v; want the snapshots counted", u, err)
	}
	if list, _ := s.List(); len(list) != 1 || list[0].Config == nil || list[0].MediaType != image.MediaTypeOCI {
		t.Errorf("List = %+v", list)
	}
	if _, err := s.Layers(image.Image{ID: "sha256:" + strings.Repeat("0", 64)}); !errors.Is(err, image.ErrNotFound) {
		t.Errorf("Layers of an unknown image = %v, want ErrNotFound", err)
	}
}

func TestSharedLayers(t *testing.T) {
	requireRoot(t)
	reg := imagetest.NewRegistry(t)
	busybox := imagetest.BusyboxImage(t)
	app := imagetest.LinuxImage(t, v1.Config{Cmd: []string{"/app/run"}}, imagetest.BusyboxLayer(t),
		imagetest.LayerOf(t, imagetest.Tar(t, imagetest.File("app/run", 0o755, []byte("#!/bin/sh\necho app\n")))))
	refA := reg.Push("busybox:v1", busybox)
	refB := reg.Push("app:v1", app)
	base := layerDigests(t, busybox)[0]
	if layerDigests(t, app)[0] != base {
		t.Fatal("the two images do not share layer 1")
	}
	gets := blobGets(reg)
	s := open(t)
	a, err := s.Pull(context.Background(), refA, image.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Pull(context.Background(), refB, image.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	la, _ := s.Layers(a)
	lb, err := s.Layers(b)
	if err != nil || len(lb) != 2 || lb[0] != la[0] || lb[1] == la[1] {
		t.Fatalf("Layers: busybox %v, app %v (%v); want the same lower snapshot", la, lb, err)
	}
	if n := gets(base); n != 1 {
		t.Errorf("the shared layer was fetched %d times, want once", n)
	}

	if err := s.Remove(a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(la[1]); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("busybox's own layer %s is still there: %v", la[1], err)
	}
	if _, err := s.Layers(b); err != nil {
		t.Errorf("app lost a layer when busybox went: %v", err)
	}
	if _, err := os.Stat(s.BlobPath(a)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("busybox's config blob is still there: %v", err)
	}
	if err := s.Remove(b.ID); err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(filepath.Dir(la[0]))
	var left []string
	for p := range tree(t, root) {
		rel, _ := filepath.Rel(root, p)
		if fi, _ := os.Lstat(p); !fi.IsDir() && rel != "refs.json" && rel != "refs.lock" {
			left = append(left, rel)
		}
	}
	if len(left) != 0 {
		t.Errorf("files left after removing both images: %v", left)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "snapshots")); len(ents) != 1 {
		t.Errorf("snapshots left: %v", ents)
	}
}

func TestConcurrentPullsShareSnapshot(t *testing.T) {
	requireRoot(t)
	reg := imagetest.NewRegistry(t)
	refA := reg.Push("busybox:v1", imagetest.BusyboxImage(t))
	refB := reg.Push("app:v1", imagetest.LinuxImage(t, v1.Config{}, imagetest.BusyboxLayer(t)))
	s := open(t)
	var wg sync.WaitGroup
	imgs := make([]image.Image, 2)
	errs := make([]error, 2)
	for i, ref := range []string{refA, refB} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			imgs[i], errs[i] = s.Pull(context.Background(), ref, image.Credentials{})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	la, _ := s.Layers(imgs[0])
	lb, err := s.Layers(imgs[1])
	if err != nil || len(lb) != 1 || lb[0] != la[0] {
		t.Errorf("Layers = %v and %v (%v), want one shared snapshot", la, lb, err)
	}
	ingest := filepath.Join(filepath.Dir(la[0]), ".ingest")
	if ents, _ := os.ReadDir(ingest); len(ents) != 0 {
		t.Errorf("ingest left: %v", ents)
	}
}

func TestMountedSnapshotOutlivesRemove(t *testing.T) {
	requireRoot(t)
	reg := imagetest.NewRegistry(t)
	ref := reg.Push("busybox:v1", imagetest.BusyboxImage(t))
	// The store's path has a space and a comma, which mountinfo escapes.
	s, err := image.Open(filepath.Join(t.TempDir(), "image store, 1"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := s.Pull(context.Background(), ref, image.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	dirs, err := s.Layers(img)
	if err != nil {
		t.Fatal(err)
	}
	// A read-only overlay of the two layers (upper first), as the runtime
	// stacks them.
	target := filepath.Join(t.TempDir(), "rootfs")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	esc := strings.NewReplacer(`\`, `\\`, ",", `\,`, ":", `\:`)
	opts := "lowerdir=" + esc.Replace(dirs[1]) + ":" + esc.Replace(dirs[0])
	if err := unix.Mount("overlay", target, "overlay", unix.MS_RDONLY, opts); err != nil {
		t.Skipf("cannot mount an overlay here: %v", err)
	}
	mounted := true
	unmount := func() {
		if mounted {
			if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount: %v", err)
			}
			mounted = false
		}
	}
	t.Cleanup(unmount)
	if b, err := os.ReadFile(filepath.Join(target, "etc/motd")); err != nil || string(b) != "hello from layer 2\n" {
		t.Fatalf("overlay etc/motd = %q, %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(target, "etc/gone")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the whited-out etc/gone shows through the overlay: %v", err)
	}

	if err := s.Remove(img.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(img.ID); !errors.Is(err, image.ErrNotFound) {
		t.Errorf("Get after Remove = %v", err)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("mounted snapshot %s removed: %v", d, err)
		}
	}
	if _, err := s.GC(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("mounted snapshot %s collected by GC: %v", d, err)
		}
	}
	unmount()
	res, err := s.GC(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("snapshot %s still there after unmount and GC: %v", d, err)
		}
	}
	if res.Freed == 0 {
		t.Errorf("GC freed %d bytes", res.Freed)
	}
}

func TestImportLinuxArchive(t *testing.T) {
	requireRoot(t)
	src := imagetest.BusyboxImage(t)
	cfgDigest, _ := src.ConfigName()
	s := open(t)
	img, err := s.ImportArchive(context.Background(), "saved/busybox:v1", bytes.NewReader(imagetest.DockerArchive(t, "saved/busybox:v1", src)))
	if err != nil {
		t.Fatal(err)
	}
	if img.ID != cfgDigest.String() || img.MediaType != image.MediaTypeOCI || img.Config == nil || img.Config.WorkingDir != "/tmp" {
		t.Errorf("ImportArchive = %+v, want ID %s", img, cfgDigest)
	}
	dirs, err := s.Layers(img)
	if err != nil || len(dirs) != 2 {
		t.Fatalf("Layers = %v, %v", dirs, err)
	}
	if _, err := os.Stat(filepath.Join(dirs[0], "bin/busybox")); err != nil {
		t.Error(err)
	}

	// An OCI image layout holding an index of two platforms: the node's
	// is picked, and its layers are the ones already in the store.
	other := imagetest.LinuxImage(t, v1.Config{}, imagetest.LayerOf(t, imagetest.Tar(t, imagetest.File("other", 0o644, []byte("s390x")))))
	cf, _ := other.ConfigFile()
	cf = cf.DeepCopy()
	cf.Architecture = "s390x"
	other, _ = mutate.ConfigFile(other, cf)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "s390x"}}},
		mutate.IndexAddendum{Add: src, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: goruntime.GOARCH}}},
	)
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(idx); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	img2, err := s.ImportArchive(context.Background(), "layout/busybox:v1", &buf)
	if err != nil {
		t.Fatal(err)
	}
	dirs2, err := s.Layers(img2)
	if img2.ID != img.ID || err != nil || !slices.Equal(dirs, dirs2) {
		t.Errorf("ImportArchive of the layout = %+v, layers %v (%v); want the same image and snapshots", img2, dirs2, err)
	}
}

func TestPullLinuxRefusals(t *testing.T) {
	requireRoot(t)
	reg := imagetest.NewRegistry(t)
	busybox := imagetest.BusyboxImage(t)
	reg.Push("busybox:v1", busybox)

	arm := imagetest.LinuxImage(t, v1.Config{}, imagetest.BusyboxLayer(t))
	cf, _ := arm.ConfigFile()
	cf = cf.DeepCopy()
	cf.Architecture = "s390x"
	arm, _ = mutate.ConfigFile(arm, cf)
	reg.Push("other/arch:v1", arm)

	foreign, err := mutate.Append(imagetest.LinuxImage(t, v1.Config{}), mutate.Addendum{
		Layer: imagetest.LayerOf(t, imagetest.Tar(t, imagetest.File("x", 0o644, []byte("x")))), MediaType: types.DockerForeignLayer,
	})
	if err != nil {
		t.Fatal(err)
	}
	reg.Push("foreign/layer:v1", foreign)

	// The config names a diff ID that the layer's content does not have.
	lying := imagetest.LinuxImage(t, v1.Config{}, imagetest.LayerOf(t, imagetest.Tar(t, imagetest.File("x", 0o644, []byte("x")))))
	cf, _ = lying.ConfigFile()
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs[0] = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	lying, _ = mutate.ConfigFile(lying, cf)
	reg.Push("lying/diffid:v1", lying)

	top := layerDigests(t, busybox)[1]
	tests := []struct {
		name, ref string
		tamper    string // the blob digest the registry corrupts
		want      error
		parts     []string
	}{
		{"other architecture", "other/arch:v1", "", image.ErrUnsupported, []string{"linux/s390x"}},
		{"foreign layer", "foreign/layer:v1", "", image.ErrUnsupported, []string{"foreign", string(types.DockerForeignLayer)}},
		{"diff ID mismatch", "lying/diffid:v1", "", image.ErrDigestMismatch, []string{"diff ID"}},
		{"layer digest mismatch", "busybox:v1", top, image.ErrDigestMismatch, []string{top}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg.SetTamper(func(d string, b []byte) []byte {
				if d == tt.tamper {
					b = bytes.Clone(b)
					b[len(b)/2] ^= 0xff
					return b
				}
				return nil
			})
			defer reg.SetTamper(nil)
			s := open(t)
			root := filepath.Dir(filepath.Dir(filepath.Dir(s.BlobPath(image.Image{ID: "sha256:x"}))))
			before := tree(t, root)
			_, err := s.Pull(context.Background(), reg.Host+"/"+tt.ref, image.Credentials{})
			if !errors.Is(err, tt.want) {
				t.Fatalf("Pull = %v, want %v", err, tt.want)
			}
			for _, p := range tt.parts {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("error %q does not say %q", err, p)
				}
			}
			if after := tree(t, root); !maps.Equal(before, after) {
				t.Errorf("the store changed:\nbefore %v\nafter  %v", slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after)))
			}
		})
	}
}

// TestPullHostileLayers pulls each layer of layer's hostile corpus, as the
// top layer of an image whose base layer is already in the store: the pull
// is refused naming the layer and the entry, and nothing changes on disk,
// in the store or around it.
func TestPullHostileLayers(t *testing.T) {
	requireRoot(t)
	reg := imagetest.NewRegistry(t)
	baseRef := reg.Push("busybox:v1", imagetest.BusyboxImage(t))
	var ran atomic.Int32
	for i, tc := range layertest.Malicious() {
		cfg := image.Config{}
		switch {
		case tc.Opts.MaxEntries != 0:
			continue // the store has no entry limit below layer's default to test with
		case tc.Opts.MaxBytes != 0:
			cfg.MaxImageBytes = tc.Opts.MaxBytes
		}
		t.Run(tc.Name, func(t *testing.T) {
			base := t.TempDir()
			sentinel := filepath.Join(base, "sentinel")
			if err := os.MkdirAll(filepath.Join(sentinel, "etc"), 0o755); err != nil {
				t.Fatal(err)
			}
			for name, body := range map[string]string{"passwd": "root:x:0:0\n", "etc/shadow": "secret\n", "evil": "untouched\n"} {
				if err := os.WriteFile(filepath.Join(sentinel, name), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			s, err := image.OpenConfig(filepath.Join(base, "store"), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if tc.Opts.MaxBytes == 0 {
				if _, err := s.Pull(context.Background(), baseRef, image.Credentials{}); err != nil {
					t.Fatal(err)
				}
			}
			hostile := imagetest.HostileImage(t, layertest.Tar(t, tc.Entries(base)...))
			digest := layerDigests(t, hostile)[0]
			ref := reg.Push(fmt.Sprintf("hostile/case%d:v1", i), hostile)
			before := tree(t, base)
			_, err = s.Pull(context.Background(), ref, image.Credentials{})
			if err == nil {
				t.Fatal("Pull succeeded")
			}
			t.Log(err)
			if !errors.Is(err, tc.Is) {
				t.Errorf("error is not %v", tc.Is)
			}
			if errors.Is(tc.Is, layer.ErrTooLarge) && !errors.Is(err, image.ErrTooLarge) {
				t.Errorf("error is not image.ErrTooLarge")
			}
			var ee *layer.EntryError
			if !errors.As(err, &ee) || !strings.HasSuffix(ee.Entry, tc.Entry) {
				t.Errorf("error does not name entry %q", tc.Entry)
			}
			if !strings.Contains(err.Error(), digest) {
				t.Errorf("error does not name the layer %s", digest)
			}
			if after := tree(t, base); !maps.Equal(before, after) {
				var diff []string
				for p, v := range after {
					if before[p] != v {
						diff = append(diff, p+": "+v)
					}
				}
				for p := range before {
					if _, ok := after[p]; !ok {
						diff = append(diff, p+": gone")
					}
				}
				t.Errorf("the disk changed: %v", diff)
			}
			if _, err := s.Get(ref); !errors.Is(err, image.ErrNotFound) {
				t.Errorf("Get of the refused image = %v", err)
			}
			ran.Add(1)
		})
	}
	if ran.Load() < 20 {
		t.Errorf("only %d corpus cases ran", ran.Load())
	}
}

// BenchmarkPullBusybox pulls the busybox image (2 layers, ~2 MB) from the
// in-process registry into an empty store.
func BenchmarkPullBusybox(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: unpacking whiteouts")
	}
	reg := imagetest.NewRegistry(b)
	ref := reg.Push("busybox:v1", imagetest.BusyboxImage(b))
	for b.Loop() {
		s, err := image.Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Pull(context.Background(), ref, image.Credentials{}); err != nil {
			b.Fatal(err)
		}
	}
}
