package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// A snapshot is one unpacked layer, snapshots/<chain ID hex>/, in the form
// overlayfs reads as a lowerdir. It is made under snapshots/.ingest/ and
// renamed into place once complete, and never changes afterwards: it is
// deleted whole (renamed away first) once no image uses it and no mounted
// overlay stacks it.

// orphanGrace is how long GC leaves a snapshot that no image uses and that
// no Remove doomed: a pull in progress has made it and not yet recorded it.
const orphanGrace = time.Hour

func (s *Store) snapshotDir() string              { return filepath.Join(s.root, "snapshots") }
func (s *Store) snapshotIngestDir() string        { return filepath.Join(s.snapshotDir(), ".ingest") }
func (s *Store) snapshotPath(chain string) string { return filepath.Join(s.snapshotDir(), chain) }

// Layers returns the snapshot directories of an OCI image's layers, lowest
// first, each complete and unchanging, ready as an overlay lowerdir. A
// missing image or snapshot gives an error wrapping ErrNotFound.
func (s *Store) Layers(img Image) ([]string, error) {
	idx, err := s.readIndex()
	if err != nil {
		return nil, fmt.Errorf("layers of image %s: %w", img.ID, err)
	}
	rec, ok := idx.Images[img.ID]
	if !ok {
		if _, err := os.Stat(s.blobPath(img.ID)); err == nil {
			return nil, fmt.Errorf("layers of image %s: it is a WebAssembly module, it has no layers", img.ID)
		}
		return nil, fmt.Errorf("layers of image %s: %w", img.ID, ErrNotFound)
	}
	dirs := make([]string, 0, len(rec.Chains))
	for i, c := range rec.Chains {
		p := s.snapshotPath(c)
		fi, err := os.Lstat(p)
		if err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("layers of image %s: layer %d (chain sha256:%s): snapshot %s: %w", img.ID, i, c, p, ErrNotFound)
		}
		dirs = append(dirs, p)
	}
	return dirs, nil
}

// usedChains is the set of snapshots the images of idx use.
func usedChains(idx *index) map[string]bool {
	used := map[string]bool{}
	for _, rec := range idx.Images {
		for _, c := range rec.Chains {
			used[c] = true
		}
	}
	return used
}

// collect deletes the doomed snapshots that no image uses (again) and no
// mounted overlay stacks, and with orphans also the snapshots no image
// uses that are older than orphanGrace (left by pulls that failed between
// unpacking and recording). It returns the bytes freed. Errors are left
// for the next collect: the index still says what is doomed.
func (s *Store) collect(orphans bool) int64 {
	if !orphans {
		if idx, err := s.readIndex(); err == nil && len(idx.Doomed) == 0 {
			return 0 // nothing to do: spare the lock and the index write
		}
	}
	var trash []string
	_ = s.update(func(idx *index) error {
		mounted, err := s.mountedSnapshots()
		if err != nil {
			return err // unsure what is mounted: delete nothing
		}
		used := usedChains(idx)
		var keep []string
		gone := func(c string) bool {
			src := s.snapshotPath(c)
			dst, err := os.MkdirTemp(s.snapshotIngestDir(), "delete-*")
			if err != nil {
				return false
			}
			if err := os.Rename(src, filepath.Join(dst, "fs")); err != nil {
				os.Remove(dst)
				return errors.Is(err, fs.ErrNotExist)
			}
			trash = append(trash, dst)
			return true
		}
		for _, c := range idx.Doomed {
			switch {
			case used[c]: // a later pull uses it again
			case mounted[c]:
				keep = append(keep, c)
			case !gone(c):
				keep = append(keep, c)
			}
		}
		idx.Doomed = keep
		if !orphans {
			return nil
		}
		entries, err := os.ReadDir(s.snapshotDir())
		if err != nil {
			return err
		}
		for _, e := range entries {
			c := e.Name()
			if !isChainHex(c) || used[c] || mounted[c] || slices.Contains(idx.Doomed, c) {
				continue
			}
			if ct, err := ctime(s.snapshotPath(c)); err != nil || time.Since(ct) < orphanGrace {
				continue
			}
			gone(c)
		}
		return nil
	})
	var freed int64
	for _, d := range trash {
		_, n, _ := du(d)
		if removeTree(d) == nil {
			freed += n
		}
	}
	return freed
}

// mountedSnapshots returns the snapshots (chain ID hex) that a mounted
// overlay of this mount namespace has as a lowerdir.
func (s *Store) mountedSnapshots() (map[string]bool, error) {
	lowers, err := s.mounted()
	if err != nil {
		return nil, err
	}
	dirs := []string{s.snapshotDir()}
	if real, err := filepath.EvalSymlinks(s.snapshotDir()); err == nil && real != s.snapshotDir() {
		dirs = append(dirs, real)
	}
	out := map[string]bool{}
	for l := range lowers {
		l = filepath.Clean(l)
		if slices.Contains(dirs, filepath.Dir(l)) && isChainHex(filepath.Base(l)) {
			out[filepath.Base(l)] = true
		}
	}
	return out, nil
}

func isChainHex(s string) bool { return len(s) == 64 && isHex(s) }

func ctime(p string) (time.Time, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return time.Time{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fi.ModTime(), nil
	}
	return time.Unix(int64(st.Ctim.Sec), int64(st.Ctim.Nsec)), nil
}

// du counts the inodes under root and the bytes of its regular files, a
// file with several links once.
func du(root string) (inodes uint64, bytes int64, err error) {
	type key struct{ dev, ino uint64 }
	seen := map[key]bool{}
	err = filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		inodes++
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
			k := key{uint64(st.Dev), st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		bytes += info.Size()
		return nil
	})
	return inodes, bytes, err
}

// removeTree removes dir and everything under it. An unpacked layer may
// have directories without write permission; without root, they are made
// writable first.
func removeTree(dir string) error {
	err := os.RemoveAll(dir)
	if err == nil || os.Geteuid() == 0 {
		return err
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}
