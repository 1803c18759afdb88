package wasm

import (
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"strings"

	"github.com/tetratelabs/wazero"
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/sys"
)

// Mounts: each Mount of a spec gives the container one host directory as a
// WASI preopen.
//
// The guest sees HostPath's tree at ContainerPath and nothing else: wazero
// refuses paths that climb above a preopen ("..", absolute paths), and the
// runtime refuses to follow a symbolic link whose target is absolute or
// climbs above the mount (EPERM), wherever the link sits in the tree. A
// guest may make symbolic links only to relative targets without "..", so
// that a link it makes, or moves, never leads out. With ReadOnly, every
// call that would change the tree fails (EROFS).
//
// Links are checked when a path is used, and the operation follows on the
// checked path: a second writer of the same directory (another container
// sharing the volume, or the host) that swaps a checked directory for an
// escaping link made by the host in between could win that race. Mount
// trees that the host fills with links it does not control read-only.

// maxSymlinks bounds the links followed while resolving one path, as
// Linux's MAXSYMLINKS does.
const maxSymlinks = 40

// checkMounts checks the mounts of a spec.
func checkMounts(mounts []Mount) error {
	seen := map[string]bool{}
	for i, m := range mounts {
		if !filepath.IsAbs(m.HostPath) || strings.IndexByte(m.HostPath, 0) >= 0 {
			return fmt.Errorf("%w: mount %d: host path %q is not absolute", ErrInvalidSpec, i, m.HostPath)
		}
		if !path.IsAbs(m.ContainerPath) || path.Clean(m.ContainerPath) != m.ContainerPath || strings.IndexByte(m.ContainerPath, 0) >= 0 {
			return fmt.Errorf("%w: mount %d: guest path %q is not an absolute, clean path", ErrInvalidSpec, i, m.ContainerPath)
		}
		if seen[m.ContainerPath] {
			return fmt.Errorf("%w: mount %d: guest path %q is mounted twice", ErrInvalidSpec, i, m.ContainerPath)
		}
		if m.Propagation != "" {
			return fmt.Errorf("%w: mount %d: propagation %q: a Wasm module sees no mounts made later", ErrInvalidSpec, i, m.Propagation)
		}
		seen[m.ContainerPath] = true
	}
	return nil
}

// withMounts adds the mounts to cfg as preopens, then reserved empty ones
// that hold the descriptors of the container's listeners (sockets.go);
// with none, the container has no filesystem at all.
func withMounts(cfg wazero.ModuleConfig, mounts []Mount, reserved int) wazero.ModuleConfig {
	if len(mounts)+reserved == 0 {
		return cfg
	}
	fsc := wazero.NewFSConfig()
	for _, m := range mounts {
		var root experimentalsys.FS = &confinedFS{inner: sysfs.DirFS(m.HostPath)}
		if m.ReadOnly {
			root = &sysfs.ReadFS{FS: root}
		}
		fsc = fsc.(sysfs.FSConfig).WithSysFSMount(root, m.ContainerPath)
	}
	for i := range reserved {
		fsc = fsc.(sysfs.FSConfig).WithSysFSMount(reservedFS{}, fmt.Sprintf("/.skiff/socket/%d", i))
	}
	return cfg.WithFSConfig(fsc)
}

// confinedFS resolves the symbolic links of every path itself, inside the
// mount, and hands inner a path without links that lead out. The paths it
// gets from wazero are relative, clean and never climb above the mount.
type confinedFS struct {
	inner experimentalsys.FS
}

// resolve follows the links in p (the last component's too when
// followLast), refusing any that is absolute or climbs above the root.
func (c *confinedFS) resolve(p string, followLast bool) (string, experimentalsys.Errno) {
	trailing := strings.HasSuffix(p, "/")
	queue := splitPath(p)
	var done []string
	hops := 0
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			if len(done) == 0 {
				return "", experimentalsys.EPERM
			}
			done = done[:len(done)-1]
			continue
		}
		cand := strings.Join(append(done, name), "/")
		if len(queue) == 0 && !followLast {
			done = append(done, name)
			break
		}
		st, errno := c.inner.Lstat(cand)
		if errno != 0 || st.Mode&fs.ModeSymlink == 0 {
			// Not a link (or not there: what follows is lexical).
			done = append(done, name)
			continue
		}
		if hops++; hops > maxSymlinks {
			return "", experimentalsys.ELOOP
		}
		target, errno := c.inner.Readlink(cand)
		if errno != 0 {
			return "", errno
		}
		if path.IsAbs(target) {
			return "", experimentalsys.EPERM
		}
		queue = append(splitPath(target), queue...)
	}
	out := strings.Join(done, "/")
	if out == "" {
		out = "."
	}
	if trailing && out != "." {
		out += "/"
	}
	return out, 0
}

func splitPath(p string) []string { return strings.Split(p, "/") }

func (c *confinedFS) String() string { return fmt.Sprint(c.inner) }

func (c *confinedFS) OpenFile(p string, flag experimentalsys.Oflag, perm fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	r, errno := c.resolve(p, flag&experimentalsys.O_NOFOLLOW == 0)
	if errno != 0 {
		return nil, errno
	}
	return c.inner.OpenFile(r, flag, perm)
}

func (c *confinedFS) Lstat(p string) (sys.Stat_t, experimentalsys.Errno) {
	r, errno := c.resolve(p, false)
	if errno != 0 {
		return sys.Stat_t{}, errno
	}
	return c.inner.Lstat(r)
}

func (c *confinedFS) Stat(p string) (sys.Stat_t, experimentalsys.Errno) {
	r, errno := c.resolve(p, true)
	if errno != 0 {
		return sys.Stat_t{}, errno
	}
	return c.inner.Stat(r)
}

func (c *confinedFS) Mkdir(p string, perm fs.FileMode) experimentalsys.Errno {
	return c.do(p, false, func(r string) experimentalsys.Errno { return c.inner.Mkdir(r, perm) })
}

func (c *confinedFS) Chmod(p string, perm fs.FileMode) experimentalsys.Errno {
	return c.do(p, true, func(r string) experimentalsys.Errno { return c.inner.Chmod(r, perm) })
}

func (c *confinedFS) Rename(from, to string) experimentalsys.Errno {
	return c.do2(from, to, c.inner.Rename)
}

func (c *confinedFS) Rmdir(p string) experimentalsys.Errno {
	return c.do(p, false, c.inner.Rmdir)
}

func (c *confinedFS) Unlink(p string) experimentalsys.Errno {
	return c.do(p, false, c.inner.Unlink)
}

func (c *confinedFS) Link(oldPath, newPath string) experimentalsys.Errno {
	return c.do2(oldPath, newPath, c.inner.Link)
}

// Symlink makes a link only to a relative target without "..": such a
// link leads below its own directory wherever it is moved.
func (c *confinedFS) Symlink(target, linkName string) experimentalsys.Errno {
	if target == "" || path.IsAbs(target) || strings.IndexByte(target, 0) >= 0 {
		return experimentalsys.EPERM
	}
	for _, part := range splitPath(target) {
		if part == ".." {
			return experimentalsys.EPERM
		}
	}
	return c.do(linkName, false, func(r string) experimentalsys.Errno { return c.inner.Symlink(target, r) })
}

func (c *confinedFS) Readlink(p string) (string, experimentalsys.Errno) {
	r, errno := c.resolve(p, false)
	if errno != 0 {
		return "", errno
	}
	return c.inner.Readlink(r)
}

func (c *confinedFS) Utimens(p string, atim, mtim int64) experimentalsys.Errno {
	return c.do(p, true, func(r string) experimentalsys.Errno { return c.inner.Utimens(r, atim, mtim) })
}

func (c *confinedFS) do(p string, followLast bool, op func(string) experimentalsys.Errno) experimentalsys.Errno {
	r, errno := c.resolve(p, followLast)
	if errno != 0 {
		return errno
	}
	return op(r)
}

func (c *confinedFS) do2(a, b string, op func(string, string) experimentalsys.Errno) experimentalsys.Errno {
	ra, errno := c.resolve(a, false)
	if errno != 0 {
		return errno
	}
	rb, errno := c.resolve(b, false)
	if errno != 0 {
		return errno
	}
	return op(ra, rb)
}
