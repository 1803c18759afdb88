// Package image is the node's image store: a content-addressed, file-based
// store of WebAssembly modules and OCI container images, and the names that
// refer to them.
//
// Layout under the root directory:
//
//	blobs/sha256/<hex>   one file per module, or per OCI image config, named by the SHA-256 of its bytes
//	snapshots/<hex>/     one unpacked OCI layer, named by the hex of its chain ID, shared by every image that has it
//	snapshots/.ingest/   layers being fetched and unpacked
//	refs.json            the index of names ("hello:latest") to image IDs ("sha256:<hex>"), and the layers of OCI images
//	refs.lock            flock(2) taken around every read-modify-write of refs.json
//	ingest/              temporary files of imports in progress
//
// Several processes may use one store at once (the node's CRI server reads it,
// `skiff image import` writes it): the index is read from disk on every Get and
// List, and every change to it is made under the file lock and written
// atomically (temp file, fsync, rename). Blobs are written the same way.
//
// Modules come in three ways: Import (a .wasm file), ImportArchive (an OCI
// image-layout tar or a docker-save tar) and Pull (an OCI registry, see
// pull.go). Wasm images from registries are stored as the module they
// carry, so the ID of a Wasm image is the digest of its module. Other
// (Linux container) images are stored as their config blob, whose digest is
// their ID as for containerd and docker, and their layers, unpacked by
// package layer into snapshot directories (see oci.go). A pulled image's names
// are the reference as given ("127.0.0.1:5000/app:v1") and its repository
// digest ("127.0.0.1:5000/app@sha256:<manifest>").
//
// The store does not validate modules beyond their header (compiling is the
// runtime's job, so a corrupt module imports and its pod fails with a
// reason), and does not know which containers use an image: GC is told.
package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Media types of the images in the store (Image.MediaType).
const (
	// MediaTypeWasm: a WebAssembly module, at BlobPath.
	MediaTypeWasm = "application/wasm"
	// MediaTypeOCI: a Linux container image, whose layers are at Layers.
	MediaTypeOCI = "application/vnd.oci.image.config.v1+json"
)

// Errors returned by the store, wrapped with the operation and the reference.
var (
	// ErrNotFound: no image has that name or ID.
	ErrNotFound = errors.New("image not found")
	// ErrInvalidName: the name does not follow the reference grammar (see NormalizeRef).
	ErrInvalidName = errors.New("invalid image name")
	// ErrNotWasm: the content does not start with the WebAssembly core module
	// header, or a registry's image holds no WebAssembly module.
	ErrNotWasm = errors.New("not a WebAssembly module")
	// ErrDigestMismatch: content does not have the digest its manifest names.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrUnauthorized: the registry refused the credentials (or their absence).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrTooLarge: a module, layer or archive is past the store's limit.
	ErrTooLarge = errors.New("too large")
	// ErrInvalidArchive: an image archive is malformed or unsafe.
	ErrInvalidArchive = errors.New("invalid image archive")
	// ErrUnsupported: the image is for another platform, or has a layer
	// of a type the store does not take (foreign, non-distributable).
	ErrUnsupported = errors.New("unsupported image")
)

// minPrefixLen is the shortest ID prefix Get and Remove accept (crictl and
// docker print 12 or 13 hex digits).
const minPrefixLen = 12

// staleIngest is the age after which Open removes a leftover temporary file.
const staleIngest = 24 * time.Hour

// Image describes one stored image.
type Image struct {
	ID        string   // "sha256:<hex>" of the module bytes, or of an OCI image's config blob
	Names     []string // normalized names ("hello:latest"), sorted
	Size      int64    // bytes: of the module, or of an OCI image's unpacked layers
	MediaType string   // MediaTypeWasm or MediaTypeOCI
	// Config is an OCI image's run configuration; nil for Wasm.
	Config *RunConfig
}

// Usage is the disk usage of the store.
type Usage struct {
	Dir       string // the store's root directory
	UsedBytes uint64 // bytes of blob and snapshot content (a hardlinked file counts once)
	Inodes    uint64 // files and directories under the root
}

// Store is an image store rooted at a directory. It is safe for concurrent
// use by several goroutines and several processes.
type Store struct {
	root string
	cfg  Config
	// statfs measures the filesystem under root, for GC; a test replaces it.
	statfs func(path string) (DiskStats, error)
	// mounted lists the lowerdirs of mounted overlays; a test replaces it.
	mounted func() (map[string]bool, error)
	mu      sync.Mutex // serializes this process's writers; refs.lock serializes processes
}

// index is the on-disk form of refs.json.
type index struct {
	Refs map[string]string `json:"refs"` // name -> ID
	// Images holds the OCI images, by ID; a Wasm image has no entry.
	Images map[string]ociRecord `json:"images,omitempty"`
	// Doomed are snapshots (chain ID hex) that no image uses any more,
	// waiting to be deleted: Remove deletes them right after it updates
	// the index, except those a mounted overlay still stacks, which a
	// later GC deletes once they are unmounted.
	Doomed []string `json:"doomed,omitempty"`
}

// ociRecord is what the index keeps of an OCI image.
type ociRecord struct {
	Size   int64    `json:"size"`   // bytes of its unpacked layers when it was stored
	Chains []string `json:"chains"` // the chain IDs (hex) of its layers, lowest first
}

// Open opens (creating if needed) the store rooted at root, for example
// <data-dir>/node/images.
func Open(root string) (*Store, error) { return OpenConfig(root, Config{}) }

// OpenConfig is Open with registry, limit and GC settings (see Config).
func OpenConfig(root string, cfg Config) (*Store, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("open image store %s: %w", root, err)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open image store %s: %w", root, err)
	}
	s := &Store{root: abs, cfg: cfg, statfs: statfs, mounted: mountedLowerdirs}
	for _, dir := range []string{s.blobDir(), s.ingestDir(), s.snapshotIngestDir()} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("open image store %s: %w", root, err)
		}
	}
	s.removeStaleIngest()
	return s, nil
}

func (s *Store) blobDir() string   { return filepath.Join(s.root, "blobs", "sha256") }
func (s *Store) ingestDir() string { return filepath.Join(s.root, "ingest") }
func (s *Store) indexPath() string { return filepath.Join(s.root, "refs.json") }
func (s *Store) lockPath() string  { return filepath.Join(s.root, "refs.lock") }
func (s *Store) blobPath(id string) string {
	return filepath.Join(s.blobDir(), strings.TrimPrefix(id, "sha256:"))
}

// BlobPath returns the path of the image's module file (for an OCI image:
// its config blob). The file is read-only by convention; it disappears when
// the image is removed.
func (s *Store) BlobPath(img Image) string { return s.blobPath(img.ID) }

// Import reads a module from r, stores it and points name at it. It checks
// the WebAssembly magic and version header (an error wrapping ErrNotWasm
// otherwise) but not the rest of the module. Importing a name that already
// refers to another image moves the name; the old blob is removed when no
// name refers to it any more. Import is atomic: on error nothing changes.
func (s *Store) Import(ctx context.Context, name string, r io.Reader) (Image, error) {
	ref, err := NormalizeRef(name)
	if err != nil {
		return Image{}, fmt.Errorf("import image: %w", err)
	}
	img, err := s.put(ctx, []string{ref}, r, "")
	if err != nil {
		return Image{}, fmt.Errorf("import image %q: %w", ref, err)
	}
	return img, nil
}

// put reads a module from r (at most s.cfg.MaxModuleBytes), stores it and
// points every one of names (normalized) at it. With wantID set, the
// module's digest must be wantID (an error wrapping ErrDigestMismatch
// otherwise). It is atomic: on error nothing changes.
func (s *Store) put(ctx context.Context, names []string, r io.Reader, wantID string) (Image, error) {
	var header [8]byte
	n, err := io.ReadFull(r, header[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return Image{}, fmt.Errorf("read: %w", err)
	}
	if err := checkHeader(header[:n]); err != nil {
		return Image{}, err
	}

	tmp, err := os.CreateTemp(s.ingestDir(), "import-*")
	if err != nil {
		return Image{}, err
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	w := io.MultiWriter(tmp, h)
	if _, err := w.Write(header[:]); err != nil {
		return Image{}, fmt.Errorf("write: %w", err)
	}
	limit := s.cfg.maxModuleBytes()
	size, err := io.Copy(w, io.LimitReader(ctxReader{ctx, r}, limit-int64(len(header))+1))
	if err != nil {
		return Image{}, fmt.Errorf("copy: %w", err)
	}
	size += int64(len(header))
	if size > limit {
		return Image{}, fmt.Errorf("%w: the module is larger than the limit of %d bytes", ErrTooLarge, limit)
	}
	id := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if wantID != "" && id != wantID {
		return Image{}, fmt.Errorf("%w: content is %s, the manifest says %s", ErrDigestMismatch, id, wantID)
	}
	if err := tmp.Chmod(0o444); err != nil {
		return Image{}, err
	}
	if err := tmp.Sync(); err != nil {
		return Image{}, fmt.Errorf("sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return Image{}, err
	}

	var img Image
	err = s.update(func(idx *index) error {
		// The blob moves into place under the lock, so that a concurrent
		// Remove cannot delete it between the rename and the name update.
		if err := os.Rename(tmp.Name(), s.blobPath(id)); err != nil {
			return err
		}
		committed = true
		delete(idx.Images, id) // the same bytes were never an OCI config: a module starts with \0asm
		if err := s.point(idx, names, id); err != nil {
			return err
		}
		img = Image{ID: id, Names: namesOf(idx, id), Size: size, MediaType: MediaTypeWasm}
		return nil
	})
	if err != nil {
		return Image{}, err
	}
	s.collect(false)
	return img, nil
}

// point points every one of names at id in idx; an image that loses its
// last name is dropped.
func (s *Store) point(idx *index, names []string, id string) error {
	for _, ref := range names {
		old, had := idx.Refs[ref]
		idx.Refs[ref] = id
		if had && old != id && len(namesOf(idx, old)) == 0 {
			if err := s.drop(idx, old); err != nil {
				return err
			}
		}
	}
	return nil
}

// drop removes the blob of the image id, which no name refers to any more,
// and its record; its snapshots that no other image uses are marked doomed
// (collect deletes them). It runs inside update.
func (s *Store) drop(idx *index, id string) error {
	if err := os.Remove(s.blobPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	rec, ok := idx.Images[id]
	if !ok {
		return nil
	}
	delete(idx.Images, id)
	used := usedChains(idx)
	for _, c := range rec.Chains {
		if !used[c] && !slices.Contains(idx.Doomed, c) {
			idx.Doomed = append(idx.Doomed, c)
		}
	}
	return nil
}

// checkHeader checks the 8-byte header of a WebAssembly core module:
// "\0asm" followed by version 1 (little endian).
func checkHeader(b []byte) error {
	if len(b) < 8 {
		return fmt.Errorf("%w: %d bytes, shorter than the 8-byte header", ErrNotWasm, len(b))
	}
	if !bytes.Equal(b[:4], []byte("\x00asm")) {
		return fmt.Errorf("%w: missing the \\0asm magic (starts with %q)", ErrNotWasm, b[:4])
	}
	switch v := binary.LittleEndian.Uint32(b[4:8]); v {
	case 1:
		return nil
	case 0x1000d:
		return fmt.Errorf("%w: this is a WebAssembly component (layer 1), only core modules are supported", ErrNotWasm)
	default:
		return fmt.Errorf("%w: binary format version %#x is not supported (want 1)", ErrNotWasm, v)
	}
}

// Get returns the image that ref names: a name ("hello", "hello:v1"), an ID
// ("sha256:<hex>" or "<hex>") or a unique prefix of at least 12 hex digits of
// an ID. An unknown ref gives an error wrapping ErrNotFound.
func (s *Store) Get(ref string) (Image, error) {
	idx, err := s.readIndex()
	if err != nil {
		return Image{}, fmt.Errorf("get image %q: %w", ref, err)
	}
	id, err := resolve(idx, ref)
	if err != nil {
		return Image{}, fmt.Errorf("get image %q: %w", ref, err)
	}
	img, err := s.describe(idx, id)
	if err != nil {
		return Image{}, fmt.Errorf("get image %q: %w", ref, err)
	}
	return img, nil
}

// List returns every image, sorted by ID.
func (s *Store) List() ([]Image, error) {
	idx, err := s.readIndex()
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var ids []string
	for _, id := range idx.Refs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	imgs := make([]Image, 0, len(ids))
	for _, id := range ids {
		img, err := s.describe(idx, id)
		if errors.Is(err, ErrNotFound) {
			continue // removed between reading the index and the stat
		}
		if err != nil {
			return nil, fmt.Errorf("list images: %w", err)
		}
		imgs = append(imgs, img)
	}
	return imgs, nil
}

// Remove removes ref. A name is removed alone; an ID (or ID prefix) removes
// every name of the image. The blob is removed when no name refers to it,
// and with it the snapshots of its layers that no other image uses, except
// those a mounted overlay stacks (GC removes them once unmounted).
// An unknown ref gives an error wrapping ErrNotFound.
func (s *Store) Remove(ref string) error {
	err := s.update(func(idx *index) error {
		id, err := resolve(idx, ref)
		if err != nil {
			return err
		}
		if name, nerr := NormalizeRef(ref); nerr == nil && idx.Refs[name] == id {
			delete(idx.Refs, name)
		} else {
			for _, n := range namesOf(idx, id) {
				delete(idx.Refs, n)
			}
		}
		if len(namesOf(idx, id)) == 0 {
			return s.drop(idx, id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove image %q: %w", ref, err)
	}
	s.collect(false)
	return nil
}

// Usage returns the disk usage of the store.
func (s *Store) Usage() (Usage, error) {
	u := Usage{Dir: s.root}
	n, bytes, err := du(s.root)
	if err != nil {
		return Usage{}, fmt.Errorf("measure image store: %w", err)
	}
	u.Inodes, u.UsedBytes = n, uint64(bytes)
	return u, nil
}

// resolve finds the ID that ref names in idx.
func resolve(idx *index, ref string) (string, error) {
	if name, err := NormalizeRef(ref); err == nil {
		if id, ok := idx.Refs[name]; ok {
			return id, nil
		}
	}
	hexRef := strings.TrimPrefix(ref, "sha256:")
	if len(hexRef) < minPrefixLen || len(hexRef) > 64 || !isHex(hexRef) {
		return "", ErrNotFound
	}
	found := ""
	for _, id := range idx.Refs {
		if strings.HasPrefix(strings.TrimPrefix(id, "sha256:"), hexRef) {
			if found != "" && found != id {
				return "", fmt.Errorf("%w: ID prefix is ambiguous", ErrNotFound)
			}
			found = id
		}
	}
	if found == "" {
		return "", ErrNotFound
	}
	return found, nil
}

func namesOf(idx *index, id string) []string {
	var names []string
	for n, i := range idx.Refs {
		if i == id {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

func (s *Store) describe(idx *index, id string) (Image, error) {
	if rec, ok := idx.Images[id]; ok {
		rc, err := s.readRunConfig(id)
		if errors.Is(err, fs.ErrNotExist) {
			return Image{}, ErrNotFound
		}
		if err != nil {
			return Image{}, err
		}
		return Image{ID: id, Names: namesOf(idx, id), Size: rec.Size, MediaType: MediaTypeOCI, Config: rc}, nil
	}
	info, err := os.Stat(s.blobPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return Image{}, ErrNotFound
	}
	if err != nil {
		return Image{}, err
	}
	return Image{ID: id, Names: namesOf(idx, id), Size: info.Size(), MediaType: MediaTypeWasm}, nil
}

// readIndex reads refs.json. It needs no lock: writers replace the file with
// a rename, so a reader sees the old or the new index, never a mix.
func (s *Store) readIndex() (*index, error) {
	idx := &index{Refs: map[string]string{}, Images: map[string]ociRecord{}}
	b, err := os.ReadFile(s.indexPath())
	if errors.Is(err, fs.ErrNotExist) {
		return idx, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, idx); err != nil {
		return nil, fmt.Errorf("read %s: %w", s.indexPath(), err)
	}
	if idx.Refs == nil {
		idx.Refs = map[string]string{}
	}
	if idx.Images == nil {
		idx.Images = map[string]ociRecord{}
	}
	return idx, nil
}

// update runs fn on the index under the process mutex and the file lock and
// writes the result atomically if fn succeeds.
func (s *Store) update(fn func(*index) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	lock, err := os.OpenFile(s.lockPath(), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close() // closing releases the flock
	if err := flock(lock); err != nil {
		return fmt.Errorf("lock %s: %w", s.lockPath(), err)
	}
	idx, err := s.readIndex()
	if err != nil {
		return err
	}
	if err := fn(idx); err != nil {
		return err
	}
	return s.writeIndex(idx)
}

func flock(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			return err
		}
	}
}

func (s *Store) writeIndex(idx *index) error {
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.root, "refs-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), s.indexPath()); err != nil {
		return err
	}
	return syncDir(s.root)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// removeStaleIngest removes temporary files and layer directories left by
// imports and pulls that did not finish (a crash).
func (s *Store) removeStaleIngest() {
	for _, dir := range []string{s.ingestDir(), s.snapshotIngestDir()} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleIngest {
				_ = removeTree(filepath.Join(dir, e.Name()))
			}
		}
	}
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
