package image

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"skiff.dev/skiff/runtime/image/layer"
)

// RunConfig is how an OCI image says to run it: the "config" of its config
// blob (the OCI image spec's ImageConfig), for the runtime to default the
// container's command, environment, working directory and user from.
type RunConfig struct {
	Entrypoint, Cmd, Env []string
	WorkingDir, User     string
	ExposedPorts         []string // "80/tcp", sorted
	Labels               map[string]string
}

// Progress is how far a pull is with one layer.
type Progress struct {
	Layer       string // the layer's digest ("sha256:<hex>")
	Done, Total int64  // compressed bytes fetched, of Total; Done == Total once fetched or found in the store
}

// maxConfigBytes bounds an OCI image's config blob.
const maxConfigBytes = 16 << 20

// commitAttempts bounds how often a pull fetches again a layer whose
// snapshot a concurrent Remove deleted before the pull recorded its image.
const commitAttempts = 3

var errSnapshotGone = errors.New("a shared layer was removed while pulling")

// layerMediaTypes are the layer types the store unpacks.
var layerMediaTypes = []types.MediaType{
	types.OCILayer, types.OCIUncompressedLayer, types.OCILayerZStd,
	types.DockerLayer, types.DockerUncompressedLayer,
}

// checkLayerType refuses the layer types the store does not take, before
// anything is fetched.
func checkLayerType(i int, d v1.Descriptor) error {
	if slices.Contains(layerMediaTypes, d.MediaType) {
		return nil
	}
	if !d.MediaType.IsDistributable() || strings.Contains(string(d.MediaType), "nondistributable") || strings.Contains(string(d.MediaType), "foreign") {
		return fmt.Errorf("%w: layer %d (%s) is a foreign (non-distributable) layer, type %s: the store takes only layers it can fetch from the image's registry", ErrUnsupported, i, d.Digest, d.MediaType)
	}
	return fmt.Errorf("%w: layer %d (%s) has media type %q, not a tar, tar+gzip or tar+zstd layer", ErrUnsupported, i, d.Digest, d.MediaType)
}

// isWasmPlatform reports whether a platform is WebAssembly's.
func isWasmPlatform(os, arch string) bool {
	return arch == "wasm" || strings.HasPrefix(os, "wasi")
}

// isNodePlatform reports whether a platform runs on this node (linux and
// the node's architecture).
func isNodePlatform(os, arch string) bool {
	return os == "linux" && arch == goruntime.GOARCH
}

// chainIDs returns the chain IDs (hex) of layers with diffIDs, lowest
// first, as the OCI image spec defines them: the first layer's is its
// diffID, the next's the SHA-256 of "<previous chain ID> <diffID>".
func chainIDs(diffIDs []v1.Hash) []string {
	out := make([]string, 0, len(diffIDs))
	var prev string
	for i, d := range diffIDs {
		c := d.String()
		if i > 0 {
			sum := sha256.Sum256([]byte(prev + " " + c))
			c = "sha256:" + hex.EncodeToString(sum[:])
		}
		out = append(out, strings.TrimPrefix(c, "sha256:"))
		prev = c
	}
	return out
}

// putOCI stores a Linux container image: its layers as snapshots (those
// not in the store yet fetched, checked and unpacked), then its config
// blob and names. On error nothing changes.
func (s *Store) putOCI(ctx context.Context, img v1.Image, m *v1.Manifest, names []string, progress func(Progress)) (Image, error) {
	if m.Config.Digest.Algorithm != "sha256" {
		return Image{}, fmt.Errorf("%w: config digest %s is not sha256", ErrUnsupported, m.Config.Digest)
	}
	if m.Config.Size > maxConfigBytes {
		return Image{}, fmt.Errorf("%w: the config blob is %d bytes, past the limit of %d", ErrTooLarge, m.Config.Size, maxConfigBytes)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return Image{}, err
	}
	sum := sha256.Sum256(raw)
	id := "sha256:" + hex.EncodeToString(sum[:])
	if id != m.Config.Digest.String() {
		return Image{}, fmt.Errorf("%w: the config blob is %s, the manifest says %s", ErrDigestMismatch, id, m.Config.Digest)
	}
	cf, err := v1.ParseConfigFile(strings.NewReader(string(raw)))
	if err != nil {
		return Image{}, fmt.Errorf("%w: config blob: %w", ErrInvalidArchive, err)
	}
	if !isNodePlatform(cf.OS, cf.Architecture) {
		return Image{}, fmt.Errorf("%w: the image is for %s/%s, this node runs linux/%s", ErrUnsupported, cf.OS, cf.Architecture, goruntime.GOARCH)
	}
	if len(cf.RootFS.DiffIDs) != len(m.Layers) {
		return Image{}, fmt.Errorf("%w: the config lists %d layer diff IDs, the manifest %d layers", ErrInvalidArchive, len(cf.RootFS.DiffIDs), len(m.Layers))
	}
	for i, d := range m.Layers {
		if err := checkLayerType(i, d); err != nil {
			return Image{}, err
		}
		if cf.RootFS.DiffIDs[i].Algorithm != "sha256" {
			return Image{}, fmt.Errorf("%w: layer %d diff ID %s is not sha256", ErrUnsupported, i, cf.RootFS.DiffIDs[i])
		}
	}
	chains := chainIDs(cf.RootFS.DiffIDs)

	cfgTmp, err := s.writeTemp(raw)
	if err != nil {
		return Image{}, err
	}
	committed := false
	defer func() {
		if !committed {
			os.Remove(cfgTmp)
		}
	}()
	p := pullLayers{s: s, img: img, m: m, diffIDs: cf.RootFS.DiffIDs, chains: chains, progress: progress, staged: map[string]string{}}
	defer p.discard()
	for attempt := 1; ; attempt++ {
		size, err := p.ensure(ctx)
		if err != nil {
			return Image{}, err
		}
		var out Image
		err = s.update(func(idx *index) error {
			if err := p.place(); err != nil {
				return err
			}
			if err := os.Rename(cfgTmp, s.blobPath(id)); err != nil {
				return err
			}
			committed = true
			idx.Images[id] = ociRecord{Size: size, Chains: chains}
			idx.Doomed = slices.DeleteFunc(idx.Doomed, func(c string) bool { return slices.Contains(chains, c) })
			if err := s.point(idx, names, id); err != nil {
				return err
			}
			rc := runConfigOf(cf)
			out = Image{ID: id, Names: namesOf(idx, id), Size: size, MediaType: MediaTypeOCI, Config: &rc}
			return nil
		})
		if errors.Is(err, errSnapshotGone) && attempt < commitAttempts {
			continue
		}
		if err != nil {
			return Image{}, err
		}
		s.collect(false)
		return out, nil
	}
}

// writeTemp writes b to a read-only temporary file in the ingest directory.
func (s *Store) writeTemp(b []byte) (string, error) {
	f, err := os.CreateTemp(s.ingestDir(), "config-*")
	if err != nil {
		return "", err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o444)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// pullLayers gets the snapshots of one image's layers.
type pullLayers struct {
	s        *Store
	img      v1.Image
	m        *v1.Manifest
	diffIDs  []v1.Hash
	chains   []string
	progress func(Progress)
	// staged are the layers unpacked by this pull and not yet in place:
	// chain -> the work directory under snapshots/.ingest holding "fs".
	staged map[string]string
}

// ensure makes sure every layer is in the store or staged, and returns the
// bytes of the image's unpacked layers.
func (p *pullLayers) ensure(ctx context.Context) (int64, error) {
	limit := p.s.cfg.maxImageBytes()
	var total int64
	for i, d := range p.m.Layers {
		c := p.chains[i]
		if work, ok := p.staged[c]; ok {
			_, n, err := du(filepath.Join(work, "fs"))
			if err != nil {
				return 0, err
			}
			total += n
			continue
		}
		if fi, err := os.Lstat(p.s.snapshotPath(c)); err == nil && fi.IsDir() {
			_, n, err := du(p.s.snapshotPath(c))
			if err != nil {
				return 0, err
			}
			total += n
			p.report(Progress{Layer: d.Digest.String(), Done: d.Size, Total: d.Size})
			continue
		}
		if total >= limit {
			return 0, fmt.Errorf("%w: the image's layers are past the limit of %d bytes unpacked", ErrTooLarge, limit)
		}
		n, err := p.fetch(ctx, i, limit-total)
		if err != nil {
			return 0, fmt.Errorf("layer %s: %w", d.Digest, err)
		}
		total += n
	}
	return total, nil
}

func (p *pullLayers) report(pr Progress) {
	if p.progress != nil {
		p.progress(pr)
	}
}

// fetch fetches layer i to a work directory, checks its digest, unpacks it
// (checking its diffID) and stages it. It returns the unpacked bytes.
func (p *pullLayers) fetch(ctx context.Context, i int, budget int64) (int64, error) {
	d := p.m.Layers[i]
	maxLayer := p.s.cfg.maxLayerBytes()
	if d.Size > maxLayer {
		return 0, fmt.Errorf("%w: %d bytes, past the limit of %d", ErrTooLarge, d.Size, maxLayer)
	}
	l, err := p.img.LayerByDigest(d.Digest)
	if err != nil {
		return 0, err
	}
	work, err := os.MkdirTemp(p.s.snapshotIngestDir(), p.chains[i][:12]+"-*")
	if err != nil {
		return 0, err
	}
	ok := false
	defer func() {
		if !ok {
			removeTree(work)
		}
	}()

	// The compressed layer is read to its end and its digest checked
	// before any of it is unpacked.
	blob, err := os.OpenFile(filepath.Join(work, "blob"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	defer blob.Close()
	rc, err := l.Compressed()
	if err != nil {
		return 0, err
	}
	h := sha256.New()
	cw := &countingWriter{report: p.report, pr: Progress{Layer: d.Digest.String(), Total: d.Size}}
	p.report(cw.pr)
	n, err := io.Copy(io.MultiWriter(blob, h, cw), io.LimitReader(ctxReader{ctx, rc}, maxLayer+1))
	rc.Close()
	if err != nil {
		return 0, err
	}
	if n > maxLayer {
		return 0, fmt.Errorf("%w: past the limit of %d bytes", ErrTooLarge, maxLayer)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d.Digest.String() {
		return 0, fmt.Errorf("%w: content is %s, the manifest says %s", ErrDigestMismatch, got, d.Digest)
	}
	cw.flush()
	if _, err := blob.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}

	// Unpack the uncompressed stream, hashing it for the diffID.
	dec, err := decompress(bufio.NewReaderSize(blob, 64<<10))
	if err != nil {
		return 0, fmt.Errorf("%w: decompress: %w", ErrInvalidArchive, err)
	}
	defer dec.Close()
	dh := sha256.New()
	tee := io.TeeReader(dec, dh)
	fsDir := filepath.Join(work, "fs")
	// Setuid and setgid bits and file capabilities are kept, as containerd
	// and Docker keep them: an image's su or ping work as their authors
	// meant, inside the container. A pod that must not gain privileges
	// sets allowPrivilegeEscalation: false (no_new_privs), under which
	// the kernel ignores them.
	st, err := layer.Unpack(ctx, tee, fsDir, layer.Options{MaxBytes: budget, KeepSetID: true})
	if err != nil {
		if errors.Is(err, layer.ErrTooLarge) {
			err = fmt.Errorf("%w: %w", ErrTooLarge, err)
		}
		return 0, err
	}
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return 0, fmt.Errorf("%w: read layer: %w", ErrInvalidArchive, err)
	}
	if got := "sha256:" + hex.EncodeToString(dh.Sum(nil)); got != p.diffIDs[i].String() {
		return 0, fmt.Errorf("%w: uncompressed content is %s, the config's diff ID is %s", ErrDigestMismatch, got, p.diffIDs[i])
	}
	blob.Close()
	if err := os.Remove(blob.Name()); err != nil {
		return 0, err
	}
	if err := syncfs(fsDir); err != nil {
		return 0, fmt.Errorf("sync layer: %w", err)
	}
	ok = true
	p.staged[p.chains[i]] = work
	return st.Bytes, nil
}

// place moves the staged layers into place and checks that the others are
// still there. It runs under the store's lock, so a Remove cannot delete a
// snapshot between the check and the image's record.
func (p *pullLayers) place() error {
	for _, c := range p.chains {
		dst := p.s.snapshotPath(c)
		if work, ok := p.staged[c]; ok {
			err := os.Rename(filepath.Join(work, "fs"), dst)
			if err != nil && !errors.Is(err, fs.ErrExist) && !errors.Is(err, syscall.ENOTEMPTY) {
				return fmt.Errorf("place layer snapshot: %w", err)
			}
			// Placed, or a concurrent pull placed the same layer first:
			// its copy is as good as ours, which is discarded.
			removeTree(work)
			delete(p.staged, c)
			continue
		}
		if fi, err := os.Lstat(dst); err != nil || !fi.IsDir() {
			return fmt.Errorf("%w: snapshot sha256:%s", errSnapshotGone, c)
		}
	}
	return syncDir(p.s.snapshotDir())
}

// discard removes the layers staged and not placed.
func (p *pullLayers) discard() {
	for c, work := range p.staged {
		removeTree(work)
		delete(p.staged, c)
	}
}

func syncfs(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

// countingWriter reports progress every MiB.
type countingWriter struct {
	report func(Progress)
	pr     Progress
	last   int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	c.pr.Done += int64(len(b))
	if c.pr.Done-c.last >= 1<<20 {
		c.flush()
	}
	return len(b), nil
}

func (c *countingWriter) flush() {
	c.last = c.pr.Done
	c.report(c.pr)
}

// readRunConfig reads the run configuration of the OCI image id from its
// config blob.
func (s *Store) readRunConfig(id string) (*RunConfig, error) {
	f, err := os.Open(s.blobPath(id))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cf, err := v1.ParseConfigFile(io.LimitReader(f, maxConfigBytes))
	if err != nil {
		return nil, fmt.Errorf("read config of image %s: %w", id, err)
	}
	rc := runConfigOf(cf)
	return &rc, nil
}

func runConfigOf(cf *v1.ConfigFile) RunConfig {
	c := cf.Config
	rc := RunConfig{
		Entrypoint: slices.Clone(c.Entrypoint), Cmd: slices.Clone(c.Cmd), Env: slices.Clone(c.Env),
		WorkingDir: c.WorkingDir, User: c.User,
	}
	for p := range c.ExposedPorts {
		rc.ExposedPorts = append(rc.ExposedPorts, p)
	}
	slices.Sort(rc.ExposedPorts)
	if len(c.Labels) > 0 {
		rc.Labels = make(map[string]string, len(c.Labels))
		for k, v := range c.Labels {
			rc.Labels[k] = v
		}
	}
	return rc
}
