package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	goruntime "runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/klauspost/compress/zstd"

	"skiff.dev/skiff/runtime/image/layer"
)

// Media types of the Wasm OCI artifact layout
// (https://tag-runtime.cncf.io/wgs/wasm/deliverables/wasm-oci-artifact/).
const (
	MediaTypeWasmConfig = "application/vnd.wasm.config.v0+json"
	// mediaTypeWasmLayerV1 is the older layer type of wasm-to-oci.
	mediaTypeWasmLayerV1 = "application/vnd.wasm.content.layer.v1+wasm"
)

// Credentials are the ones a pull request carries (the kubelet's
// imagePullSecrets); zero means the node's own (Config.Auth, then
// ~/.docker/config.json).
type Credentials struct {
	Username, Password, Auth, IdentityToken, RegistryToken string
}

func (c Credentials) empty() bool { return c == Credentials{} }

// Pull fetches ref from its registry (through its mirrors first, see
// Config), verifies every byte against its digest and stores the image
// under ref and ref's repository digest.
//
// A Wasm image is stored as its module: the Wasm OCI artifact layout (an
// application/wasm layer), or an OCI image whose entrypoint is a .wasm
// file, taken from the layers. Any other image must be for linux and the
// node's architecture (an index picks a wasm platform first, then that
// one) and is stored as a Linux container image (MediaTypeOCI): its
// config blob, and its layers unpacked into snapshots shared with the
// other images that have them; a layer already in the store is not
// fetched again.
//
// Errors name ref and wrap ErrNotFound, ErrUnauthorized, ErrNotWasm (a
// Wasm platform's image without a module), ErrUnsupported, ErrDigestMismatch,
// ErrTooLarge, ErrInvalidArchive, layer.ErrRefused (a hostile layer: the
// error names the layer's digest and the entry) or the context's error;
// on error nothing changes. The pull ends at ctx's deadline, or after
// Config.PullTimeout if ctx has none.
func (s *Store) Pull(ctx context.Context, ref string, creds Credentials) (Image, error) {
	return s.PullWithProgress(ctx, ref, creds, nil)
}

// PullWithProgress is Pull, calling progress (when not nil) from the
// pulling goroutine as each layer of a Linux image is fetched.
func (s *Store) PullWithProgress(ctx context.Context, ref string, creds Credentials, progress func(Progress)) (Image, error) {
	stored, err := NormalizeRef(ref)
	if err != nil {
		return Image{}, fmt.Errorf("pull image: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.pullTimeout())
		defer cancel()
	}
	img, err := s.pull(ctx, ref, stored, creds, progress)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
			err = fmt.Errorf("%w (%v)", ctxErr, err)
		}
		return Image{}, fmt.Errorf("pull image %q: %w", ref, err)
	}
	return img, nil
}

func (s *Store) pull(ctx context.Context, ref, stored string, creds Credentials, progress func(Progress)) (Image, error) {
	origin, err := name.ParseReference(ref)
	if err != nil {
		return Image{}, fmt.Errorf("%w: %w", ErrInvalidName, err)
	}
	host := origin.Context().RegistryStr()
	var mirrors []name.Reference
	for _, m := range s.cfg.registry(host).Mirrors {
		r, err := s.parseAt(m, origin)
		if err == nil {
			mirrors = append(mirrors, r)
		}
	}
	origin, err = s.parseAt(host, origin)
	if err != nil {
		return Image{}, fmt.Errorf("%w: %w", ErrInvalidName, err)
	}
	tries := append(mirrors, origin)
	if s.cfg.registry(host).MirrorsOnly {
		tries = mirrors
		if len(tries) == 0 {
			return Image{}, fmt.Errorf("%w: %s: no mirror of %s is usable and mirrorsOnly forbids the registry itself", ErrNotFound, ref, host)
		}
	}
	var firstErr error
	for _, r := range tries {
		desc, err := remote.Get(r, s.remoteOptions(ctx, creds)...)
		if err != nil {
			err = classify(err)
			if firstErr == nil || !errors.Is(err, ErrNotFound) {
				firstErr = err
			}
			if ctx.Err() != nil {
				break
			}
			continue // the next mirror, or the registry itself
		}
		img, err := s.fetch(ctx, desc, stored, progress)
		if err != nil {
			return Image{}, classify(err)
		}
		return img, nil
	}
	return Image{}, firstErr
}

// parseAt re-parses ref with its registry replaced by host, with the
// scheme the config gives host.
func (s *Store) parseAt(host string, ref name.Reference) (name.Reference, error) {
	var opts []name.Option
	if s.cfg.plainHTTP(host) {
		opts = append(opts, name.Insecure)
	}
	sep := ":"
	if _, ok := ref.(name.Digest); ok {
		sep = "@"
	}
	return name.ParseReference(host+"/"+ref.Context().RepositoryStr()+sep+ref.Identifier(), opts...)
}

func (s *Store) remoteOptions(ctx context.Context, creds Credentials) []remote.Option {
	opts := []remote.Option{remote.WithContext(ctx), remote.WithUserAgent("skiff")}
	if !creds.empty() {
		return append(opts, remote.WithAuth(authn.FromConfig(authn.AuthConfig{
			Username: creds.Username, Password: creds.Password, Auth: creds.Auth,
			IdentityToken: creds.IdentityToken, RegistryToken: creds.RegistryToken,
		})))
	}
	var keychain authn.Keychain = authn.DefaultKeychain
	if s.cfg.Auth != "" {
		keychain = authn.NewMultiKeychain(fileKeychain{path: s.cfg.Auth}, authn.DefaultKeychain)
	}
	return append(opts, remote.WithAuthFromKeychain(keychain))
}

// fetch stores the image (or index) desc describes.
func (s *Store) fetch(ctx context.Context, desc *remote.Descriptor, stored string, progress func(Progress)) (Image, error) {
	names := []string{stored}
	repo, _, _ := strings.Cut(stored, "@")
	if i := strings.LastIndexByte(repo, ':'); i > strings.LastIndexByte(repo, '/') {
		repo = repo[:i]
	}
	if d := repo + "@" + desc.Digest.String(); d != stored {
		names = append(names, d)
	}
	var img v1.Image
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return Image{}, err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return Image{}, err
		}
		pick, err := pickPlatform(im.Manifests)
		if err != nil {
			return Image{}, err
		}
		if img, err = idx.Image(pick.Digest); err != nil {
			return Image{}, err
		}
	case desc.MediaType.IsImage():
		var err error
		if img, err = desc.Image(); err != nil {
			return Image{}, err
		}
	default:
		return Image{}, fmt.Errorf("%w: manifest media type %q is neither an image nor an index", ErrUnsupported, desc.MediaType)
	}
	return s.putImage(ctx, img, names, progress)
}

// pickPlatform picks from an index's manifests the one for a wasm
// platform, else the one for linux on the node's architecture.
func pickPlatform(ms []v1.Descriptor) (*v1.Descriptor, error) {
	for i, m := range ms {
		if p := m.Platform; p != nil && isWasmPlatform(p.OS, p.Architecture) {
			return &ms[i], nil
		}
	}
	var have []string
	for i, m := range ms {
		if p := m.Platform; p != nil {
			if isNodePlatform(p.OS, p.Architecture) {
				return &ms[i], nil
			}
			have = append(have, p.OS+"/"+p.Architecture)
		}
	}
	return nil, fmt.Errorf("%w: the index has no manifest for a wasm platform (architecture wasm or os wasi*) nor for linux/%s (it has %s)", ErrUnsupported, goruntime.GOARCH, strings.Join(have, ", "))
}

// putImage stores img under names: its module if it is a Wasm image, else
// the Linux image. It serves Pull and ImportArchive alike.
func (s *Store) putImage(ctx context.Context, img v1.Image, names []string, progress func(Progress)) (Image, error) {
	m, err := img.Manifest()
	if err != nil {
		return Image{}, err
	}
	var wasmLayer *v1.Descriptor
	for i, l := range m.Layers {
		if l.MediaType == MediaTypeWasm || l.MediaType == mediaTypeWasmLayerV1 {
			if wasmLayer != nil {
				return Image{}, fmt.Errorf("%w: the manifest has more than one WebAssembly layer (components are not supported)", ErrNotWasm)
			}
			wasmLayer = &m.Layers[i]
		}
	}
	if wasmLayer != nil {
		if wasmLayer.Size > s.cfg.maxModuleBytes() {
			return Image{}, fmt.Errorf("%w: the module layer is %d bytes, past the limit of %d", ErrTooLarge, wasmLayer.Size, s.cfg.maxModuleBytes())
		}
		l, err := img.LayerByDigest(wasmLayer.Digest)
		if err != nil {
			return Image{}, err
		}
		rc, err := l.Compressed() // the bytes as stored: a module layer is not compressed
		if err != nil {
			return Image{}, err
		}
		defer rc.Close()
		return s.put(ctx, names, rc, wasmLayer.Digest.String())
	}
	if m.Config.MediaType == MediaTypeWasmConfig {
		return Image{}, fmt.Errorf("%w: the manifest has the Wasm config type but no %s layer", ErrNotWasm, MediaTypeWasm)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return Image{}, err
	}
	entry := append(append([]string{}, cf.Config.Entrypoint...), cf.Config.Cmd...)
	if len(entry) == 0 || !strings.HasSuffix(entry[0], ".wasm") {
		if !isWasmPlatform(cf.OS, cf.Architecture) {
			return s.putOCI(ctx, img, m, names, progress)
		}
		return Image{}, fmt.Errorf("%w: no %s layer, and the image's entrypoint %q is not a .wasm file", ErrNotWasm, MediaTypeWasm, entry)
	}
	file, err := cleanEntrypoint(entry[0])
	if err != nil {
		return Image{}, err
	}
	layers, err := img.Layers()
	if err != nil {
		return Image{}, err
	}
	// The top layer that holds the file, or a whiteout of it, wins.
	for i := len(layers) - 1; i >= 0; i-- {
		found, img, err := s.putFromLayer(ctx, layers[i], file, names)
		if err != nil || found {
			return img, err
		}
	}
	return Image{}, fmt.Errorf("%w: the entrypoint %s is in none of the image's layers", ErrNotWasm, entry[0])
}

// cleanEntrypoint turns an entrypoint into a path inside the image's
// filesystem, refusing one that leaves it.
func cleanEntrypoint(p string) (string, error) {
	rel := strings.TrimPrefix(p, "/")
	for _, part := range strings.Split(rel, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: the entrypoint %q has a \"..\" component", ErrNotWasm, p)
		}
	}
	c := path.Clean(rel)
	if c == "." || c == "" {
		return "", fmt.Errorf("%w: the entrypoint %q names no file", ErrNotWasm, p)
	}
	return c, nil
}

// putFromLayer looks for file in a layer. The compressed layer is first
// read to the end into a temporary file, so that its digest is checked
// before any of it is used.
func (s *Store) putFromLayer(ctx context.Context, l v1.Layer, file string, names []string) (bool, Image, error) {
	if size, err := l.Size(); err == nil && size > s.cfg.maxLayerBytes() {
		return false, Image{}, fmt.Errorf("%w: a layer is %d bytes, past the limit of %d", ErrTooLarge, size, s.cfg.maxLayerBytes())
	}
	rc, err := l.Compressed()
	if err != nil {
		return false, Image{}, err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(s.ingestDir(), "layer-*")
	if err != nil {
		return false, Image{}, err
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	n, err := io.Copy(tmp, io.LimitReader(ctxReader{ctx, rc}, s.cfg.maxLayerBytes()+1))
	if err != nil {
		return false, Image{}, err
	}
	if n > s.cfg.maxLayerBytes() {
		return false, Image{}, fmt.Errorf("%w: a layer is past the limit of %d bytes", ErrTooLarge, s.cfg.maxLayerBytes())
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return false, Image{}, err
	}
	r, err := decompress(bufio.NewReader(tmp))
	if err != nil {
		return false, Image{}, err
	}
	defer r.Close()
	tr := tar.NewReader(ctxReader{ctx, r})
	dir, base := path.Split(file)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return false, Image{}, nil
		}
		if err != nil {
			return false, Image{}, fmt.Errorf("%w: read layer: %w", ErrInvalidArchive, err)
		}
		n := path.Clean(strings.TrimPrefix(h.Name, "/"))
		if n == path.Join(dir, ".wh."+base) {
			return false, Image{}, fmt.Errorf("%w: the entrypoint %s is deleted by a layer", ErrNotWasm, file)
		}
		if n != file {
			continue
		}
		if h.Typeflag != tar.TypeReg {
			return false, Image{}, fmt.Errorf("%w: the entrypoint %s is not a regular file in its layer (links are not followed)", ErrNotWasm, file)
		}
		img, err := s.put(ctx, names, tr, "")
		return true, img, err
	}
}

// decompress opens a layer compressed with gzip, zstd or nothing.
func decompress(r *bufio.Reader) (io.ReadCloser, error) {
	magic, _ := r.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		return gzip.NewReader(r)
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		d, err := zstd.NewReader(r, zstd.WithDecoderMaxMemory(64<<20))
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	default:
		return io.NopCloser(r), nil
	}
}

// classify wraps a go-containerregistry error in the store's sentinels.
func classify(err error) error {
	if err == nil {
		return nil
	}
	for _, e := range []error{ErrNotFound, ErrUnauthorized, ErrNotWasm, ErrDigestMismatch, ErrTooLarge, ErrInvalidName, ErrUnsupported, ErrInvalidArchive, layer.ErrRefused, context.DeadlineExceeded, context.Canceled} {
		if errors.Is(err, e) {
			return err
		}
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusNotFound:
			return fmt.Errorf("%w: %w", ErrNotFound, err)
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("%w: %w", ErrUnauthorized, err)
		}
		for _, d := range te.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode:
				return fmt.Errorf("%w: %w", ErrNotFound, err)
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return fmt.Errorf("%w: %w", ErrUnauthorized, err)
			}
		}
	}
	// go-containerregistry's verifying reader (internal/verify) has no
	// exported error type.
	if msg := err.Error(); strings.Contains(msg, "error verifying") || strings.Contains(msg, "does not match requested digest") {
		return fmt.Errorf("%w: %w", ErrDigestMismatch, err)
	}
	return err
}

// fileKeychain reads credentials from a docker config.json.
type fileKeychain struct{ path string }

func (k fileKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	return k.ResolveContext(context.Background(), r)
}

func (k fileKeychain) ResolveContext(_ context.Context, r authn.Resource) (authn.Authenticator, error) {
	b, err := os.ReadFile(k.path)
	if err != nil {
		return nil, fmt.Errorf("read registry auth %s: %w", k.path, err)
	}
	var f struct {
		Auths map[string]authn.AuthConfig `json:"auths"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("registry auth %s: %w", k.path, err)
	}
	host := r.RegistryStr()
	for _, key := range []string{host, "https://" + host, "http://" + host, "https://" + host + "/v1/"} {
		if c, ok := f.Auths[key]; ok {
			return authn.FromConfig(c), nil
		}
	}
	if host == name.DefaultRegistry {
		if c, ok := f.Auths[authn.DefaultAuthKey]; ok {
			return authn.FromConfig(c), nil
		}
		if c, ok := f.Auths["docker.io"]; ok {
			return authn.FromConfig(c), nil
		}
	}
	return authn.Anonymous, nil
}
