package layer

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// resolve is how every path is resolved under the layer root: beneath it,
// through no symlink at all, on the same mount.
const resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// writer writes entries under one layer directory. Every operation is an
// *at call on the entry's parent directory, opened with openat2 (resolve),
// on its base name, never following a symlink at the last component.
type writer struct {
	root     int // O_PATH fd of the layer directory
	isRoot   bool
	uid, gid int // who creates files: chown is skipped when the entry says the same
	buf      []byte

	// cache holds the last parent directory opened (entries come grouped by
	// directory). It is dropped whenever a directory is removed.
	cacheName string
	cacheFd   int

	dirs     []dirMeta // directories, to chmod and date last
	dirIndex map[string]int
	rootSeen bool // the tar had a "." entry
}

type dirMeta struct {
	name string
	m    meta
}

func openWriter(dir string, _ Options) (*writer, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return &writer{root: fd, isRoot: os.Geteuid() == 0, uid: os.Geteuid(), gid: os.Getegid(), buf: make([]byte, 256<<10), cacheFd: -1, dirIndex: map[string]int{}}, nil
}

func (w *writer) close() {
	w.dropCache()
	unix.Close(w.root)
}

func (w *writer) dropCache() {
	if w.cacheFd >= 0 {
		unix.Close(w.cacheFd)
	}
	w.cacheFd, w.cacheName = -1, ""
}

// parent returns an O_PATH fd of name's parent (created 0755 if missing
// and create is set) and name's base. The fd belongs to w: do not close it.
func (w *writer) parent(name string, create bool) (int, string, error) {
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		return w.root, base, nil
	}
	if w.cacheFd >= 0 && dir == w.cacheName {
		return w.cacheFd, base, nil
	}
	fd, err := w.openDir(dir, create)
	if err != nil {
		return -1, "", err
	}
	w.dropCache()
	w.cacheFd, w.cacheName = fd, dir
	return fd, base, nil
}

// openDir opens dir (relative, clean) as an O_PATH fd the caller closes.
func (w *writer) openDir(dir string, create bool) (int, error) {
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: resolve}
	fd, err := unix.Openat2(w.root, dir, how)
	if err == nil {
		return fd, nil
	}
	if !errors.Is(err, unix.ENOENT) || !create {
		return -1, resolveErr(dir, err)
	}
	// Walk down, creating what is missing.
	cur := w.root
	for _, c := range strings.Split(dir, "/") {
		fd, err := unix.Openat2(cur, c, how)
		if errors.Is(err, unix.ENOENT) {
			if err = unix.Mkdirat(cur, c, 0o755); err == nil {
				if err = unix.Fchmodat(cur, c, 0o755, 0); err == nil {
					fd, err = unix.Openat2(cur, c, how)
				}
			}
		}
		if cur != w.root {
			unix.Close(cur)
		}
		if err != nil {
			return -1, resolveErr(dir, err)
		}
		cur = fd
	}
	return cur, nil
}

func resolveErr(dir string, err error) error {
	switch {
	case errors.Is(err, unix.ELOOP):
		return refused("parent %q goes through a symlink", dir)
	case errors.Is(err, unix.EXDEV):
		return refused("parent %q escapes the layer", dir)
	case errors.Is(err, unix.ENOTDIR):
		return refused("parent %q is not a directory", dir)
	}
	return fmt.Errorf("open parent %q: %w", dir, err)
}

// clear makes room for a new entry at pfd/base: what is there is removed,
// except a directory when a directory comes (then exists is true).
func (w *writer) clear(pfd int, base string, dir bool) (exists bool, err error) {
	var st unix.Stat_t
	err = unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat existing entry: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := unix.Unlinkat(pfd, base, 0); err != nil {
			return false, fmt.Errorf("replace existing entry: %w", err)
		}
		return false, nil
	}
	if dir {
		return true, nil
	}
	w.dropCache()
	if err := removeAllAt(pfd, base); err != nil {
		return false, fmt.Errorf("replace existing directory: %w", err)
	}
	return false, nil
}

// removeAllAt removes the directory pfd/base and what it holds, never
// following symlinks.
func removeAllAt(pfd int, base string) error {
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), base)
	ents, err := f.ReadDir(-1)
	if err == nil {
		for _, e := range ents {
			if e.IsDir() {
				err = removeAllAt(fd, e.Name())
			} else {
				err = unix.Unlinkat(fd, e.Name(), 0)
			}
			if err != nil {
				break
			}
		}
	}
	f.Close()
	if err != nil {
		return err
	}
	return unix.Unlinkat(pfd, base, unix.AT_REMOVEDIR)
}

func timespecs(m meta) []unix.Timespec {
	ts := func(t time.Time) unix.Timespec {
		if t.IsZero() {
			return unix.Timespec{Nsec: unix.UTIME_OMIT}
		}
		return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
	}
	return []unix.Timespec{ts(m.atime), ts(m.mtime)}
}

// owner chowns pfd/base (not following a symlink) when running as root.
func (w *writer) owner(pfd int, base string, m meta) error {
	if !w.isRoot {
		return nil
	}
	if err := unix.Fchownat(pfd, base, m.uid, m.gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown %d:%d: %w", m.uid, m.gid, err)
	}
	return nil
}

func setXattrs(fd int, xs map[string]string) error {
	for k, v := range xs {
		if err := unix.Fsetxattr(fd, k, []byte(v), 0); err != nil {
			return fmt.Errorf("set xattr %q: %w", k, err)
		}
	}
	return nil
}

// onlyWriter hides os.File's ReadFrom so io.CopyBuffer uses w.buf.
type onlyWriter struct{ io.Writer }

func (w *writer) file(name string, m meta, r io.Reader, size int64) error {
	pfd, base, err := w.parent(name, true)
	if err != nil {
		return err
	}
	const flags = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(pfd, base, flags, 0o600)
	if errors.Is(err, unix.EEXIST) {
		if _, err := w.clear(pfd, base, false); err != nil {
			return err
		}
		fd, err = unix.Openat(pfd, base, flags, 0o600)
	}
	if err != nil {
		return fmt.Errorf("create file: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	if _, err := io.CopyBuffer(onlyWriter{f}, io.LimitReader(r, size), w.buf); err != nil {
		return fmt.Errorf("write file: %w", err)
	}
	// chown before chmod and xattrs: chown clears setuid bits and
	// security.capability.
	if w.isRoot && (m.uid != w.uid || m.gid != w.gid) {
		if err := unix.Fchown(fd, m.uid, m.gid); err != nil {
			return fmt.Errorf("chown %d:%d: %w", m.uid, m.gid, err)
		}
	}
	if err := unix.Fchmod(fd, m.mode); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if err := setXattrs(fd, m.xattrs); err != nil {
		return err
	}
	if err := unix.UtimesNanoAt(pfd, base, timespecs(m), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return f.Close()
}

func (w *writer) dir(name string, m meta) error {
	pfd, base, err := w.parent(name, true)
	if err != nil {
		return err
	}
	if name == "." {
		w.rootSeen = true
	} else {
		exists, err := w.clear(pfd, base, true)
		if err != nil {
			return err
		}
		if !exists {
			// 0700 until finish: a read-only directory must still take
			// its entries.
			if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
				return fmt.Errorf("mkdir: %w", err)
			}
		}
	}
	if err := w.owner(pfd, base, m); err != nil {
		return err
	}
	if len(m.xattrs) > 0 {
		fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open directory: %w", err)
		}
		err = setXattrs(fd, m.xattrs)
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	if i, ok := w.dirIndex[name]; ok {
		w.dirs[i].m = m
	} else {
		w.dirIndex[name] = len(w.dirs)
		w.dirs = append(w.dirs, dirMeta{name, m})
	}
	return nil
}

func (w *writer) symlink(name, target string, m meta) error {
	pfd, base, err := w.parent(name, true)
	if err != nil {
		return err
	}
	if _, err := w.clear(pfd, base, false); err != nil {
		return err
	}
	if err := unix.Symlinkat(target, pfd, base); err != nil {
		return fmt.Errorf("symlink: %w", err)
	}
	if err := w.owner(pfd, base, m); err != nil {
		return err
	}
	if err := unix.UtimesNanoAt(pfd, base, timespecs(m), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

func (w *writer) link(name, target string) error {
	tdir, tbase := path.Split(target)
	tfd := w.root
	if tdir = strings.TrimSuffix(tdir, "/"); tdir != "" {
		fd, err := w.openDir(tdir, false)
		if errors.Is(err, unix.ENOENT) {
			return refused("hardlink target %q was not extracted before it", target)
		}
		if err != nil {
			return fmt.Errorf("hardlink target: %w", err)
		}
		defer unix.Close(fd)
		tfd = fd
	}
	var st unix.Stat_t
	if err := unix.Fstatat(tfd, tbase, &st, unix.AT_SYMLINK_NOFOLLOW); errors.Is(err, unix.ENOENT) {
		return refused("hardlink target %q was not extracted before it", target)
	} else if err != nil {
		return fmt.Errorf("stat hardlink target %q: %w", target, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFLNK, unix.S_IFIFO:
	default:
		return refused("hardlink target %q is not a file, symlink or FIFO", target)
	}
	pfd, base, err := w.parent(name, true)
	if err != nil {
		return err
	}
	if _, err := w.clear(pfd, base, false); err != nil {
		return err
	}
	if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
		return fmt.Errorf("hardlink to %q: %w", target, err)
	}
	return nil
}

func (w *writer) fifo(name string, m meta) error {
	pfd, base, err := w.parent(name, true)
	if err != nil {
		return err
	}
	if _, err := w.clear(pfd, base, false); err != nil {
		return err
	}
	if err := unix.Mknodat(pfd, base, unix.S_IFIFO|0o600, 0); err != nil {
		return fmt.Errorf("mkfifo: %w", err)
	}
	if err := w.owner(pfd, base, m); err != nil {
		return err
	}
	if err := unix.Fchmodat(pfd, base, m.mode, 0); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if err := unix.UtimesNanoAt(pfd, base, timespecs(m), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

// whiteout makes name an overlayfs whiteout (a 0/0 character device),
// unless this layer already has name.
func (w *writer) whiteout(name string) error {
	pfd, base, err := w.parent(name, true)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		return nil // a whiteout hides lower layers only
	} else if !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("stat whited-out entry: %w", err)
	}
	if err := unix.Mknodat(pfd, base, unix.S_IFCHR, 0); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("whiteout %q needs root or Linux 5.8+ (mknod of a 0/0 character device): %w", base, errors.ErrUnsupported)
		}
		return fmt.Errorf("whiteout %q: %w", base, err)
	}
	return nil
}

// opaque marks the directory of the entry name (its .wh..wh..opq)
// opaque (trusted.overlay.opaque=y), creating it if missing.
func (w *writer) opaque(name string) error {
	pfd, _, err := w.parent(name, true)
	if err != nil {
		return err
	}
	fd, err := unix.Openat(pfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open opaque directory: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Fsetxattr(fd, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("opaque directory needs root (xattr trusted.overlay.opaque): %w", errors.ErrUnsupported)
		}
		return fmt.Errorf("mark directory opaque: %w", err)
	}
	return nil
}

// finish applies directories' modes and times, deepest first (the order
// of the tar reversed), and gives the layer root 0755 unless the tar set it.
func (w *writer) finish() error {
	w.dropCache()
	if !w.rootSeen {
		if err := unix.Fchmodat(w.root, ".", 0o755, 0); err != nil {
			return fmt.Errorf("chmod layer root: %w", err)
		}
	}
	for i := len(w.dirs) - 1; i >= 0; i-- {
		d := w.dirs[i]
		pfd, base, err := w.parent(d.name, false)
		if err != nil {
			continue // replaced by a later entry
		}
		var st unix.Stat_t
		if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue // replaced by a later entry
		}
		if err := unix.Fchmodat(pfd, base, d.m.mode, 0); err != nil {
			return fmt.Errorf("chmod directory %q: %w", d.name, err)
		}
		if err := unix.UtimesNanoAt(pfd, base, timespecs(d.m), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("set times of directory %q: %w", d.name, err)
		}
	}
	return nil
}

// removeTree removes a partial layer. Directories may have been made
// unreadable by finish; without root, make them writable first.
func removeTree(dir string) error {
	err := os.RemoveAll(dir)
	if err == nil || os.Geteuid() == 0 {
		return err
	}
	_ = chmodDirs(dir)
	return os.RemoveAll(dir)
}

func chmodDirs(dir string) error {
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			_ = chmodDirs(path.Join(dir, e.Name()))
		}
	}
	return nil
}
