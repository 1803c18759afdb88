package imagetest

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"io"
	"os"
	goruntime "runtime"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BusyboxPath is where Debian's busybox-static package puts busybox.
const BusyboxPath = "/bin/busybox"

// BusyboxApplets are the applets layer 1 of the busybox image links to
// busybox in /bin.
var BusyboxApplets = []string{"sh", "echo", "sleep", "cat", "id", "nc", "ls", "env", "true", "false", "ps", "kill", "mkdir", "rm", "touch", "grep", "hostname", "ip", "wget", "head", "wc", "test", "uname", "whoami", "timeout", "seq"}

// BusyboxConfig is the run configuration of BusyboxImage.
var BusyboxConfig = v1.Config{
	Cmd:          []string{"/bin/sh"},
	Env:          []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hello"},
	WorkingDir:   "/tmp",
	User:         "0:0",
	ExposedPorts: map[string]struct{}{"8080/tcp": {}},
	Labels:       map[string]string{"org.skiff.test": "busybox"},
}

var mtime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Entry is one tar entry of a test layer.
type Entry struct {
	Header tar.Header
	Body   []byte
}

// File is a regular file entry.
func File(name string, mode int64, body []byte) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body)), ModTime: mtime}, Body: body}
}

// Dir is a directory entry.
func Dir(name string, mode int64) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: mtime}}
}

// Symlink is a symlink entry.
func Symlink(name, target string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: mtime}}
}

// Whiteout is the entry that deletes path of the layers below.
func Whiteout(dir, base string) Entry {
	return File(dir+".wh."+base, 0o644, nil)
}

// Tar writes entries as an uncompressed tar.
func Tar(t testing.TB, es ...Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := e.Header
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("write header %q: %v", h.Name, err)
		}
		if _, err := tw.Write(e.Body); err != nil {
			t.Fatalf("write %q: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// LayerOf is an OCI tar+gzip layer of an uncompressed tar. The same tar
// gives the same layer (digest) every time.
func LayerOf(t testing.TB, tarBytes []byte) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarBytes)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// LinuxImage is an OCI image for linux on this machine's architecture,
// with cfg and layers (lowest first).
func LinuxImage(t testing.TB, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config = cfg
	cf.OS, cf.Architecture = "linux", goruntime.GOARCH
	cf.Created = v1.Time{Time: mtime}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// Busybox returns the bytes of the host's static busybox, skipping the
// test (naming the package) when it is absent or not static.
func Busybox(t testing.TB) []byte {
	t.Helper()
	f, err := elf.Open(BusyboxPath)
	if err != nil {
		t.Skipf("%s: %v: install Debian's busybox-static (apt-get install -y busybox-static)", BusyboxPath, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Skipf("%s is dynamically linked: install Debian's busybox-static (apt-get install -y busybox-static)", BusyboxPath)
		}
	}
	b, err := os.ReadFile(BusyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// BusyboxBaseTar is layer 1 of the busybox image: /bin/busybox, a symlink
// in /bin for each of BusyboxApplets, /etc/passwd and /etc/group (root and
// nobody), /etc/gone (deleted by layer 2) and /tmp.
func BusyboxBaseTar(t testing.TB) []byte {
	t.Helper()
	es := []Entry{
		Dir("./", 0o755),
		Dir("bin/", 0o755),
		File("bin/busybox", 0o755, Busybox(t)),
	}
	for _, a := range BusyboxApplets {
		es = append(es, Symlink("bin/"+a, "busybox"))
	}
	es = append(es,
		Dir("etc/", 0o755),
		File("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")),
		File("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")),
		File("etc/gone", 0o644, []byte("deleted by layer 2\n")),
		Dir("root/", 0o700),
		Dir("tmp/", 0o1777),
	)
	return Tar(t, es...)
}

// BusyboxTopTar is layer 2 of the busybox image: /etc/motd and a whiteout
// of /etc/gone.
func BusyboxTopTar(t testing.TB) []byte {
	t.Helper()
	return Tar(t,
		Dir("etc/", 0o755),
		File("etc/motd", 0o644, []byte("hello from layer 2\n")),
		Whiteout("etc/", "gone"),
	)
}

// BusyboxLayer is layer 1 of the busybox image, for other images to share.
func BusyboxLayer(t testing.TB) v1.Layer { return LayerOf(t, BusyboxBaseTar(t)) }

// BusyboxImage is a small real Linux image of the host's busybox (see
// BusyboxBaseTar and BusyboxTopTar) with BusyboxConfig. It skips the test
// when busybox-static is not installed.
func BusyboxImage(t testing.TB) v1.Image {
	t.Helper()
	return LinuxImage(t, BusyboxConfig, BusyboxLayer(t), LayerOf(t, BusyboxTopTar(t)))
}

// HostileImage is a Linux image whose one layer is the tar layerTar (for
// the hostile-layer corpus of package layertest).
func HostileImage(t testing.TB, layerTar []byte) v1.Image {
	t.Helper()
	return LinuxImage(t, v1.Config{Cmd: []string{"/bin/sh"}}, LayerOf(t, layerTar))
}

// DockerArchive writes img as `docker save` does (manifest.json, the config
// and the layers), tagged ref.
func DockerArchive(t testing.TB, ref string, img v1.Image) []byte {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tarball.Write(tag, img, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
