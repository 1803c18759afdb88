package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// writeFileAtomic writes data to path with mode perm so that a reader sees
// the old file or the new one, never part of it, and a crash leaves one of
// them on disk: a temporary file in the same directory, synced, renamed over
// path, then the directory synced.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	// CreateTemp makes the file 0600; Chmod sets the mode whatever the umask.
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// readFiles reads every path. found is false when none of them exists; a
// missing file among present ones is an error naming it.
func readFiles(paths ...string) (data [][]byte, found bool, err error) {
	data = make([][]byte, len(paths))
	var missing, present []string
	for i, p := range paths {
		b, err := os.ReadFile(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, p)
		case err != nil:
			return nil, false, fmt.Errorf("read %s: %w", p, err)
		default:
			data[i] = b
			present = append(present, p)
		}
	}
	if len(present) == 0 {
		return nil, false, nil
	}
	if len(missing) > 0 {
		return nil, true, fmt.Errorf("%s exists but %s does not", present[0], missing[0])
	}
	return data, true, nil
}
