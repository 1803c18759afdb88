package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// maxArchiveEntries bounds the files of an archive.
const maxArchiveEntries = 10000

// ImportArchive imports the image in an archive read from r: an OCI
// image-layout tar (index.json, oci-layout, blobs/; as `crane pull
// --format=oci` and `docker save` write them) or a docker-save tar
// (manifest.json). The image is stored as Pull stores it: a Wasm module, or
// a Linux image with its layers unpacked; an index picks its wasm
// platform, else linux on the node's architecture. Every blob is checked
// against its digest, every layer against its diff ID. The image is
// stored under name. On error nothing changes.
func (s *Store) ImportArchive(ctx context.Context, name string, r io.Reader) (Image, error) {
	ref, err := NormalizeRef(name)
	if err != nil {
		return Image{}, fmt.Errorf("import image: %w", err)
	}
	img, err := s.importArchive(ctx, ref, r)
	if err != nil {
		return Image{}, fmt.Errorf("import image %q: %w", ref, classify(err))
	}
	return img, nil
}

func (s *Store) importArchive(ctx context.Context, ref string, r io.Reader) (Image, error) {
	dir, err := os.MkdirTemp(s.ingestDir(), "archive-*")
	if err != nil {
		return Image{}, err
	}
	defer os.RemoveAll(dir)
	if err := s.untar(ctx, dir, r); err != nil {
		return Image{}, err
	}
	names := []string{ref}
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err == nil {
		p, err := layout.FromPath(dir)
		if err != nil {
			return Image{}, fmt.Errorf("%w: %w", ErrInvalidArchive, err)
		}
		idx, err := p.ImageIndex()
		if err != nil {
			return Image{}, fmt.Errorf("%w: %w", ErrInvalidArchive, err)
		}
		img, err := pickImage(idx, 0)
		if err != nil {
			return Image{}, err
		}
		return s.putImage(ctx, img, names, nil)
	}
	if _, err := os.Stat(filepath.Join(dir, "manifest.json")); err == nil {
		img, err := tarball.Image(func() (io.ReadCloser, error) { return tarOf(dir) }, nil)
		if err != nil {
			return Image{}, fmt.Errorf("%w: %w", ErrInvalidArchive, err)
		}
		return s.putImage(ctx, img, names, nil)
	}
	return Image{}, fmt.Errorf("%w: neither index.json (OCI image layout) nor manifest.json (docker save) at the top of the tar", ErrInvalidArchive)
}

// pickImage returns the one image of an index, or its wasm platform's.
func pickImage(idx v1.ImageIndex, depth int) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArchive, err)
	}
	if depth > 2 || len(im.Manifests) == 0 {
		return nil, fmt.Errorf("%w: the index holds no image", ErrInvalidArchive)
	}
	d := im.Manifests[0]
	if len(im.Manifests) > 1 {
		pick, err := pickPlatform(im.Manifests)
		if err != nil {
			return nil, err
		}
		d = *pick
	}
	if d.MediaType.IsIndex() {
		child, err := idx.ImageIndex(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidArchive, err)
		}
		return pickImage(child, depth+1)
	}
	img, err := idx.Image(d.Digest)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArchive, err)
	}
	return img, nil
}

// untar extracts regular files and directories of r into dir, refusing
// links, devices and names that leave dir, within the store's size limit.
func (s *Store) untar(ctx context.Context, dir string, r io.Reader) error {
	tr := tar.NewReader(ctxReader{ctx, r})
	budget := max(s.cfg.maxLayerBytes(), s.cfg.maxImageBytes())
	for n := 0; ; n++ {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if n == 0 {
				return fmt.Errorf("%w: the tar is empty", ErrInvalidArchive)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidArchive, err)
		}
		if n >= maxArchiveEntries {
			return fmt.Errorf("%w: more than %d entries", ErrTooLarge, maxArchiveEntries)
		}
		rel := path.Clean(h.Name)
		if !fs.ValidPath(rel) {
			return fmt.Errorf("%w: entry %q leaves the archive (absolute or ..)", ErrInvalidArchive, h.Name)
		}
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if h.Size > budget {
				return fmt.Errorf("%w: the archive is past the limit of %d bytes", ErrTooLarge, max(s.cfg.maxLayerBytes(), s.cfg.maxImageBytes()))
			}
			budget -= h.Size
			if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
				return err
			}
			f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("%w: entry %q: %w", ErrInvalidArchive, h.Name, err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: entry %q is not a regular file or directory (links are refused)", ErrInvalidArchive, h.Name)
		}
	}
}

// tarOf streams dir as a tar, for go-containerregistry's tarball reader,
// which reads docker-save archives from a tar.
func tarOf(dir string) (io.ReadCloser, error) {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			info, err := d.Info()
			if err != nil {
				return err
			}
			if err := tw.WriteHeader(&tar.Header{Name: filepath.ToSlash(rel), Mode: 0o600, Size: info.Size(), Typeflag: tar.TypeReg}); err != nil {
				return err
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		})
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr, nil
}
