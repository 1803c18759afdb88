package wasm

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

// cacheFiles lists the compiled modules in dir (the index excepted) and
// their total size.
func cacheFiles(t *testing.T, dir string) (map[string]bool, int64) {
	t.Helper()
	files := map[string]bool{}
	var total int64
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() && e.Name() != diskIndexName {
			info, _ := e.Info()
			total += info.Size()
			rel, _ := filepath.Rel(dir, p)
			files[rel] = true
		}
		return nil
	})
	return files, total
}

// TestDiskCache: a module's compiled code on disk goes when its image is
// forgotten, and the cache stays within its bound, oldest out first.
func TestDiskCache(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	modules := map[string]string{}
	for _, k := range []string{"a", "b", "c"} {
		modules[k] = writeModule(t, wasmtest.Build(wasmtest.Write(1, "module "+k)))
	}
	compile := func(r *Runtime, key string) {
		t.Helper()
		c, err := r.Create(ctx, ContainerSpec{ID: key, ImageID: key, ImagePath: modules[key], Args: []string{key}})
		if err != nil {
			t.Fatal(err)
		}
		c.Stop(ctx, 0)
	}

	r := newRuntime(t, Config{CacheDir: dir})
	compile(r, "a")
	files, size := cacheFiles(t, dir)
	if len(files) != 1 {
		t.Fatalf("after compiling a: cache files %v, want 1", files)
	}
	r.Forget("a")
	if files, _ := cacheFiles(t, dir); len(files) != 0 {
		t.Errorf("after Forget(a): cache files %v, want none", files)
	}
	compile(r, "a") // compiles again
	r.Close(ctx)

	// Room for one and a half modules: each new one pushes the oldest out.
	r = newRuntime(t, Config{CacheDir: dir, DiskCacheBytes: size * 3 / 2})
	compile(r, "b")
	compile(r, "c")
	files, total := cacheFiles(t, dir)
	if len(files) != 1 || total > size*3/2 {
		t.Errorf("cache holds %d files, %d bytes; want 1 within %d", len(files), total, size*3/2)
	}
	var index map[string][]string
	b, err := os.ReadFile(filepath.Join(dir, diskIndexName))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &index); err != nil {
		t.Fatal(err)
	}
	if len(index) != 1 || len(index["c"]) != 1 || !files[index["c"][0]] {
		t.Errorf("index = %v, want only c's file %v", index, files)
	}
}
