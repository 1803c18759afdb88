package wasm

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// DefaultDiskCacheBytes bounds wazero's compilation cache on disk when
// Config.DiskCacheBytes is zero.
const DefaultDiskCacheBytes = 1 << 30

// diskIndexName is the file, in the cache directory, that records which
// of wazero's cache files holds which module's compiled code.
const diskIndexName = "skiff-modules.json"

// diskCache bounds wazero's compilation cache on disk (Config.CacheDir),
// whose files wazero names by a hash of its own and never removes. It
// learns which file holds a module's code by listing the directory around
// the compilation that writes it (compilations that miss the memory cache
// are serialised for that), records it in an index, and so can remove a
// module's code when its image leaves the node (Runtime.Forget), and the
// oldest files when the directory grows past its bound. A file it removes
// only costs a compilation at the next start of that module.
type diskCache struct {
	dir string
	max int64

	mu    sync.Mutex          // serialises recorded compilations and the index
	index map[string][]string // module key -> files, relative to dir
}

func newDiskCache(dir string, max int64) *diskCache {
	d := &diskCache{dir: dir, max: max, index: map[string][]string{}}
	if b, err := os.ReadFile(filepath.Join(dir, diskIndexName)); err == nil {
		json.Unmarshal(b, &d.index) // a torn index only forgets attributions
	}
	return d
}

// files lists the cache's files (relative paths) with their size and
// modification time, the index excepted.
func (d *diskCache) files() map[string]fs.FileInfo {
	out := map[string]fs.FileInfo{}
	filepath.WalkDir(d.dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(d.dir, p)
		if rel == diskIndexName || filepath.Ext(rel) == ".tmp" {
			return nil
		}
		if info, err := e.Info(); err == nil {
			out[rel] = info
		}
		return nil
	})
	return out
}

// record runs compile, which may write key's code to the cache, and
// records the files it added under key; then it trims the cache to its
// bound.
func (d *diskCache) record(key string, compile func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	before := d.files()
	err := compile()
	after := d.files()
	for f := range after {
		if _, ok := before[f]; !ok && !slices.Contains(d.index[key], f) {
			d.index[key] = append(d.index[key], f)
		}
	}
	d.trim(after)
	d.save()
	return err
}

// forget removes key's files.
func (d *diskCache) forget(key string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	files, ok := d.index[key]
	if !ok {
		return
	}
	for _, f := range files {
		os.Remove(filepath.Join(d.dir, f))
	}
	delete(d.index, key)
	d.save()
}

// trim removes the oldest files until the cache holds at most max bytes.
func (d *diskCache) trim(files map[string]fs.FileInfo) {
	var total int64
	names := make([]string, 0, len(files))
	for f, info := range files {
		total += info.Size()
		names = append(names, f)
	}
	if total <= d.max {
		return
	}
	slices.SortFunc(names, func(a, b string) int { return files[a].ModTime().Compare(files[b].ModTime()) })
	for _, f := range names {
		if total <= d.max {
			break
		}
		if err := os.Remove(filepath.Join(d.dir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		total -= files[f].Size()
		for key, fs := range d.index {
			if i := slices.Index(fs, f); i >= 0 {
				if d.index[key] = slices.Delete(fs, i, i+1); len(d.index[key]) == 0 {
					delete(d.index, key)
				}
			}
		}
	}
}

// save writes the index, atomically.
func (d *diskCache) save() {
	b, err := json.Marshal(d.index)
	if err != nil {
		return
	}
	tmp := filepath.Join(d.dir, diskIndexName+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return
	}
	os.Rename(tmp, filepath.Join(d.dir, diskIndexName))
}
