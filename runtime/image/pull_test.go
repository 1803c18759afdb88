package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"skiff.dev/skiff/runtime/image"
	"skiff.dev/skiff/runtime/image/imagetest"
)

var module = []byte("\x00asm\x01\x00\x00\x00pulled")

func open(t *testing.T) *image.Store {
	t.Helper()
	s, err := image.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPull(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	artifact := reg.Push("wasm/hello:v1", imagetest.WasmArtifact(t, module))
	oci := reg.Push("oci/hello:v1", imagetest.OCIImage(t, map[string][]byte{"app/hello.wasm": module, "app/README": []byte("hi")}, "/app/hello.wasm"))
	ctx := context.Background()
	for _, ref := range []string{artifact, oci} {
		t.Run(ref, func(t *testing.T) {
			s := open(t)
			img, err := s.Pull(ctx, ref, image.Credentials{})
			if err != nil {
				t.Fatal(err)
			}
			if img.Size != int64(len(module)) || !strings.HasPrefix(img.ID, "sha256:") {
				t.Errorf("pulled %+v", img)
			}
			got, err := s.Get(ref)
			if err != nil || got.ID != img.ID {
				t.Fatalf("Get(%q) = %+v, %v", ref, got, err)
			}
			b, err := os.ReadFile(s.BlobPath(got))
			if err != nil || !bytes.Equal(b, module) {
				t.Errorf("stored module = %q, %v", b, err)
			}
			if len(got.Names) != 2 || !strings.Contains(got.Names[1]+got.Names[0], "@sha256:") {
				t.Errorf("names = %v, want the tag and the repository digest", got.Names)
			}
			// By digest, the second pull finds the same image.
			var digestName string
			for _, n := range got.Names {
				if strings.Contains(n, "@") {
					digestName = n
				}
			}
			again, err := s.Pull(ctx, digestName, image.Credentials{})
			if err != nil || again.ID != img.ID {
				t.Errorf("Pull(%q) = %+v, %v", digestName, again, err)
			}
		})
	}
}

func TestPullRefusals(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	good := imagetest.WasmArtifact(t, module)
	reg.Push("wasm/hello:v1", good)
	reg.Push("linux/app:v1", imagetest.OCIImage(t, map[string][]byte{"bin/app": []byte("ELF")}, "/bin/app"))
	reg.Push("escape/app:v1", imagetest.OCIImage(t, map[string][]byte{"app.wasm": module}, "/../app.wasm"))
	reg.Push("fake/app:v1", imagetest.WasmArtifact(t, []byte("#!/bin/sh\n")))
	layers, _ := good.Layers()
	layerDigest, _ := layers[0].Digest()

	tests := []struct {
		name, ref string
		want      error
		parts     []string
	}{
		{"unknown tag", reg.Host + "/wasm/hello:nope", image.ErrNotFound, []string{"wasm/hello:nope", "image not found"}},
		{"unknown repository", reg.Host + "/nothing:v1", image.ErrNotFound, nil},
		{"not wasm", reg.Host + "/linux/app:v1", image.ErrNotWasm, []string{"entrypoint [\"/bin/app\"] is not a .wasm file"}},
		{"unsafe entrypoint", reg.Host + "/escape/app:v1", image.ErrNotWasm, []string{`has a ".." component`}},
		{"not a module", reg.Host + "/fake/app:v1", image.ErrNotWasm, []string{"missing the \\0asm magic"}},
		{"bad name", "UPPER/case", image.ErrInvalidName, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			_, err := s.Pull(context.Background(), tt.ref, image.Credentials{})
			if !errors.Is(err, tt.want) {
				t.Fatalf("Pull(%q) = %v, want %v", tt.ref, err, tt.want)
			}
			for _, p := range append(tt.parts, tt.ref) {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("error %q does not contain %q", err, p)
				}
			}
			if imgs, _ := s.List(); len(imgs) != 0 {
				t.Errorf("images after a refused pull: %v", imgs)
			}
		})
	}

	t.Run("digest mismatch", func(t *testing.T) {
		reg.SetTamper(func(digest string, body []byte) []byte {
			if digest == layerDigest.String() {
				b := bytes.Clone(body)
				b[len(b)-1] ^= 0xff
				return b
			}
			return nil
		})
		defer reg.SetTamper(nil)
		s := open(t)
		ref := reg.Host + "/wasm/hello:v1"
		_, err := s.Pull(context.Background(), ref, image.Credentials{})
		if !errors.Is(err, image.ErrDigestMismatch) || !strings.Contains(err.Error(), ref) {
			t.Fatalf("Pull = %v, want a digest mismatch naming %s", err, ref)
		}
		if imgs, _ := s.List(); len(imgs) != 0 {
			t.Errorf("images after a tampered pull: %v", imgs)
		}
	})

	t.Run("deadline", func(t *testing.T) {
		release := make(chan struct{})
		reg.SetWait(func(r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		defer func() { close(release); reg.SetWait(nil) }()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := open(t).Pull(ctx, reg.Host+"/wasm/hello:v1", image.Credentials{})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Pull = %v, want the deadline", err)
		}
	})
}

func TestPullMirror(t *testing.T) {
	origin := imagetest.NewRegistry(t)
	mirror := imagetest.NewRegistry(t)
	mirrored := []byte("\x00asm\x01\x00\x00\x00mirror")
	origin.Push("app:v1", imagetest.WasmArtifact(t, module))
	mirror.Push("app:v1", imagetest.WasmArtifact(t, mirrored))
	origin.Push("only-origin:v1", imagetest.WasmArtifact(t, module))
	s, err := image.OpenConfig(t.TempDir(), image.Config{Registries: map[string]image.Registry{origin.Host: {Mirrors: []string{mirror.Host}}}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := s.Pull(context.Background(), origin.Host+"/app:v1", image.Credentials{})
	if err != nil || img.Size != int64(len(mirrored)) {
		t.Errorf("Pull through the mirror = %+v, %v; want the mirror's module", img, err)
	}
	img, err = s.Pull(context.Background(), origin.Host+"/only-origin:v1", image.Credentials{})
	if err != nil || img.Size != int64(len(module)) {
		t.Errorf("Pull missing from the mirror = %+v, %v; want the origin's module", img, err)
	}

	// With mirrorsOnly, an image no mirror has is not found, and the
	// registry itself is never asked.
	var asked atomic.Bool
	origin.SetWait(func(*http.Request) { asked.Store(true) })
	s, err = image.OpenConfig(t.TempDir(), image.Config{Registries: map[string]image.Registry{origin.Host: {Mirrors: []string{mirror.Host}, MirrorsOnly: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(context.Background(), origin.Host+"/only-origin:v1", image.Credentials{}); !errors.Is(err, image.ErrNotFound) || asked.Load() {
		t.Errorf("Pull with mirrorsOnly of an image only the origin has = %v (origin asked: %v), want not found without asking it", err, asked.Load())
	}
	if _, err := s.Pull(context.Background(), origin.Host+"/app:v1", image.Credentials{}); err != nil || asked.Load() {
		t.Errorf("Pull with mirrorsOnly through the mirror = %v (origin asked: %v)", err, asked.Load())
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte(s), 0o600)
		return p
	}
	c, err := image.LoadConfig(write("registries:\n  docker.io:\n    mirrors: [mirror.local:5000]\n  r.local:5000:\n    plainHTTP: true\ngc:\n  highThresholdPercent: 90\n  lowThresholdPercent: 70\n  minAge: 1m\n"))
	if err != nil || c.Registries["docker.io"].Mirrors[0] != "mirror.local:5000" || !c.Registries["r.local:5000"].PlainHTTP || c.GC.MinAge.Duration != time.Minute {
		t.Errorf("LoadConfig = %+v, %v", c, err)
	}
	for in, want := range map[string]string{
		"gc:\n  highThresholdPercent: 101\n":                           "gc.highThresholdPercent: invalid value 101",
		"gc:\n  highThresholdPercent: 50\n  lowThresholdPercent: 60\n": "gc.lowThresholdPercent: invalid value 60",
		"mirrors: []\n": `unknown field "mirrors"`,
		"registries:\n  docker.io:\n    mirrors: ['bad host!']\n": "registries[docker.io].mirrors[0]",
		"registries:\n  docker.io:\n    mirrorsOnly: true\n":      "registries[docker.io].mirrorsOnly: set without mirrors",
	} {
		if _, err := image.LoadConfig(write(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("LoadConfig(%q) = %v, want %q", in, err, want)
		}
	}
}

func TestImportArchive(t *testing.T) {
	ctx := context.Background()
	// An OCI image layout, as `crane pull --format=oci` writes it, as a tar.
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(imagetest.WasmArtifact(t, module)); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	tw.Close()

	s := open(t)
	img, err := s.ImportArchive(ctx, "airgap:v1", bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Get("airgap:v1")
	if err != nil || got.ID != img.ID || got.Size != int64(len(module)) {
		t.Errorf("Get = %+v, %v", got, err)
	}

	unsafe := func(h tar.Header) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		tw.WriteHeader(&h)
		tw.Close()
		return b.Bytes()
	}
	for name, tt := range map[string]struct {
		archive []byte
		want    string
	}{
		"escape":  {unsafe(tar.Header{Name: "../x", Typeflag: tar.TypeReg}), `entry "../x" leaves the archive`},
		"symlink": {unsafe(tar.Header{Name: "index.json", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}), "links are refused"},
		"empty":   {unsafe(tar.Header{Name: "x/", Typeflag: tar.TypeDir}), "neither index.json"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := s.ImportArchive(ctx, "bad", bytes.NewReader(tt.archive))
			if !errors.Is(err, image.ErrInvalidArchive) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), `"bad:latest"`) {
				t.Errorf("ImportArchive = %v, want %q", err, tt.want)
			}
		})
	}
}
