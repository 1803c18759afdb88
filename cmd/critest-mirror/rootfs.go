package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// epoch is the time of every file and config: the same inputs make the
// same digests, run after run.
var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// maxFileBytes bounds a host file copied into an image.
const maxFileBytes = 64 << 20

// tree is the content of one layer: absolute paths to entries. Parent
// directories are added (root-owned, 0755) when the layer is written.
type tree map[string]entry

type entry struct {
	typ  byte   // tar.TypeReg, tar.TypeDir, tar.TypeSymlink or tar.TypeLink
	mode int64  // permission bits, setuid included
	data []byte // a file's content
	link string // a symlink's target; a hard link's, absolute in the layer
}

func (t tree) file(p string, mode int64, data []byte) {
	t[p] = entry{typ: tar.TypeReg, mode: mode, data: data}
}
func (t tree) dir(p string, mode int64) { t[p] = entry{typ: tar.TypeDir, mode: mode} }
func (t tree) symlink(p, target string) {
	t[p] = entry{typ: tar.TypeSymlink, mode: 0o777, link: target}
}

// hardlink adds p as a hard link to target, a file of the same layer
// (hard links are written after every other entry).
func (t tree) hardlink(p, target string) {
	t[p] = entry{typ: tar.TypeLink, mode: t[target].mode, link: target}
}

// hostFile adds the host file src (symlinks followed) at p.
func (t tree) hostFile(p, src string, mode int64) error {
	data, err := readBounded(src)
	if err != nil {
		return err
	}
	t.file(p, mode, data)
	return nil
}

// tar writes t as an uncompressed tar stream, parents before children,
// every entry owned by root and dated epoch.
func (t tree) tar() ([]byte, error) {
	all := map[string]entry{}
	for p, e := range t {
		if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
			return nil, fmt.Errorf("layer path %q: not a clean absolute path", p)
		}
		all[p] = e
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := all[d]; !ok {
				all[d] = entry{typ: tar.TypeDir, mode: 0o755}
			}
		}
	}
	for p := range all {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if e := all[d]; e.typ != tar.TypeDir {
				return nil, fmt.Errorf("layer path %q: parent %q is not a directory", p, d)
			}
		}
	}
	names := make([]string, 0, len(all))
	for p := range all {
		names = append(names, p)
	}
	// Sorted, hard links last: after the files they link to.
	sort.Slice(names, func(i, j int) bool {
		li, lj := all[names[i]].typ == tar.TypeLink, all[names[j]].typ == tar.TypeLink
		if li != lj {
			return lj
		}
		return names[i] < names[j]
	})
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range names {
		e := all[p]
		h := &tar.Header{
			Typeflag: e.typ,
			Name:     strings.TrimPrefix(p, "/"),
			Mode:     e.mode,
			ModTime:  epoch,
			Uname:    "root",
			Gname:    "root",
			Format:   tar.FormatPAX,
		}
		switch e.typ {
		case tar.TypeDir:
			h.Name += "/"
		case tar.TypeSymlink:
			h.Linkname = e.link
		case tar.TypeLink:
			h.Linkname = strings.TrimPrefix(e.link, "/")
		case tar.TypeReg:
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("write %s: %w", p, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("write %s: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// layer is t as a gzip-compressed OCI layer.
func (t tree) layer() (v1.Layer, error) {
	b, err := t.tar()
	if err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// libDirs is where a shared library named by DT_NEEDED is looked for on
// the host, in the order Debian's loader looks.
var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// addELF adds the host executable src at p with what it needs to run: its
// program interpreter (the loader) at the path the executable names and
// every shared library it needs, transitively, at the path where the host
// has it. A library that is the same host file as one already added is
// a symlink to it. A static executable adds itself only.
func (t tree) addELF(p, src string, mode int64) error {
	if err := t.hostFile(p, src, mode); err != nil {
		return err
	}
	added := map[string]string{} // real host path -> path in t
	var walk func(file string) error
	walk = func(file string) error {
		f, err := elf.Open(file)
		if err != nil {
			return fmt.Errorf("read %s: %w", file, err)
		}
		defer f.Close()
		var needed []string // image paths, with their host paths
		hosts := map[string]string{}
		for _, prog := range f.Progs {
			if prog.Type != elf.PT_INTERP {
				continue
			}
			b, err := io.ReadAll(io.LimitReader(prog.Open(), 4096))
			if err != nil {
				return fmt.Errorf("read the interpreter of %s: %w", file, err)
			}
			interp := strings.TrimRight(string(b), "\x00")
			needed = append(needed, interp)
			hosts[interp] = interp
		}
		libs, err := f.ImportedLibraries()
		if err != nil {
			return fmt.Errorf("read the libraries %s needs: %w", file, err)
		}
		for _, lib := range libs {
			host, err := findLib(lib)
			if err != nil {
				return fmt.Errorf("%s needs %s: %w", file, lib, err)
			}
			needed = append(needed, host)
			hosts[host] = host
		}
		for _, img := range needed {
			if _, ok := t[img]; ok {
				continue
			}
			real, err := filepath.EvalSymlinks(hosts[img])
			if err != nil {
				return err
			}
			if prev, ok := added[real]; ok {
				t.symlink(img, prev)
				continue
			}
			if err := t.hostFile(img, real, 0o755); err != nil {
				return err
			}
			added[real] = img
			if err := walk(real); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(src)
}

func findLib(name string) (string, error) {
	if strings.Contains(name, "/") {
		return "", fmt.Errorf("library name %q has a slash", name)
	}
	for _, d := range libDirs {
		p := path.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("not in %s: %w", strings.Join(libDirs, ", "), fs.ErrNotExist)
}

func readBounded(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	if len(b) > maxFileBytes {
		return nil, fmt.Errorf("read %s: %w", p, errTooLarge)
	}
	return b, nil
}

var errTooLarge = errors.New("larger than 64 MiB")
