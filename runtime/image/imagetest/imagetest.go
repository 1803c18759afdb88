// Package imagetest builds Wasm images and small Linux images (of the
// host's busybox, or of hostile layers) and serves them from an in-process
// OCI registry on 127.0.0.1, for tests.
package imagetest

import (
	"archive/tar"
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Registry is an in-process registry.
type Registry struct {
	t    testing.TB
	Host string // "127.0.0.1:port"

	mu sync.Mutex // guards tamper and wait, read by the serving goroutines
	// tamper, when set, rewrites the body of the blob whose digest it is
	// given; it returns nil to leave it alone.
	tamper func(digest string, body []byte) []byte
	// wait, when set, is called before each request is served.
	wait func(r *http.Request)
}

// SetTamper makes the registry rewrite blobs with f (nil: serve them as
// they are).
func (r *Registry) SetTamper(f func(digest string, body []byte) []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tamper = f
}

// SetWait makes the registry call f before serving each request (a slow
// registry; nil: none).
func (r *Registry) SetWait(f func(r *http.Request)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.wait = f
}

func (r *Registry) hooks() (func(string, []byte) []byte, func(*http.Request)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tamper, r.wait
}

// NewRegistry starts a registry, stopped when the test ends.
func NewRegistry(t testing.TB) *Registry {
	r := &Registry{t: t}
	reg := registry.New(registry.Logger(nopLogger()))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		tamper, wait := r.hooks()
		if wait != nil {
			wait(req)
		}
		if tamper != nil && req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:") {
			rec := httptest.NewRecorder()
			reg.ServeHTTP(rec, req)
			body := rec.Body.Bytes()
			if b := tamper(req.URL.Path[strings.LastIndex(req.URL.Path, "/")+1:], body); b != nil {
				body = b
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(body)
			return
		}
		reg.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.Host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// Push pushes img as repo:tag and returns the reference.
func (r *Registry) Push(repoTag string, img v1.Image) string {
	r.t.Helper()
	ref, err := name.ParseReference(r.Host + "/" + repoTag)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		r.t.Fatal(err)
	}
	return ref.String()
}

// WasmArtifact is module in the Wasm OCI artifact layout: config type
// application/vnd.wasm.config.v0+json and one application/wasm layer.
func WasmArtifact(t testing.TB, module []byte) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, "application/vnd.wasm.config.v0+json")
	img, err := mutate.Append(img, mutate.Addendum{Layer: static.NewLayer(module, "application/wasm")})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// OCIImage is a plain OCI image with files in one gzip layer and an
// entrypoint.
func OCIImage(t testing.TB, files map[string][]byte, entrypoint ...string) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for p, b := range files {
		if err := tw.WriteHeader(&tar.Header{Name: p, Mode: 0o755, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	tw.Close()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Entrypoint = entrypoint
	cf.OS, cf.Architecture = "wasip1", "wasm"
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}
