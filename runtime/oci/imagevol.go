package oci

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	skiffrt "skiff.dev/skiff/runtime"

	"golang.org/x/sys/unix"
)

// Image volumes (ContainerSpec.ImageMounts). Each is a read-only overlay
// of the image's layers, with no upper layer, mounted on the node at
// <bundle>/imgvol/<n>/fs, and bound read-only into the container (its
// SubPath, when set). The overlay names the layers as lowerdirs, so that
// the image store sees them in use (runtime/image mountinfo.go) and keeps
// them. The bundle is the record: Remove (and a failed Create) unmounts
// whatever is mounted under <bundle>/imgvol, so a node restart that adopts
// the container loses nothing.

// imageVolDir is the directory of a bundle that holds its image volumes.
const imageVolDir = "imgvol"

// validateImageMounts checks what can be checked of the image mounts
// without mounting them.
func validateImageMounts(spec *skiffrt.ContainerSpec) error {
	for i, m := range spec.ImageMounts {
		if !filepath.IsAbs(m.ContainerPath) || filepath.Clean(m.ContainerPath) != m.ContainerPath || m.ContainerPath == "/" {
			return invalid("imageMounts[%d].containerPath %q: want an absolute, clean path other than /", i, m.ContainerPath)
		}
		if len(m.Layers) == 0 {
			return invalid("imageMounts[%d].layers: the image has no layers", i)
		}
		for j, l := range m.Layers {
			if !filepath.IsAbs(l) {
				return invalid("imageMounts[%d].layers[%d] %q: want an absolute path", i, j, l)
			}
			if fi, err := os.Stat(l); err != nil || !fi.IsDir() {
				return invalid("imageMounts[%d].layers[%d] %q: not a directory", i, j, l)
			}
		}
		if err := checkSubPath(m.SubPath); err != nil {
			return invalid("imageMounts[%d].subPath %q: %v", i, m.SubPath, err)
		}
	}
	return nil
}

// checkSubPath checks that p, if not empty, is a relative, clean path
// with no "..".
func checkSubPath(p string) error {
	switch {
	case p == "":
		return nil
	case strings.IndexByte(p, 0) >= 0:
		return errors.New("holds a NUL byte")
	case path.IsAbs(p):
		return errors.New("want a path relative to the image's root")
	case slices.Contains(strings.Split(p, "/"), ".."):
		return errors.New(`want a path without ".."`)
	case path.Clean(p) != p || p == ".":
		return errors.New("want a clean path")
	}
	return nil
}

// mountImageVolumes mounts the image volumes of spec under bundle and
// returns the bind mounts that give them to the container. On error
// nothing is left mounted (the caller removes the bundle).
func mountImageVolumes(bundle string, spec *skiffrt.ContainerSpec) ([]skiffrt.Mount, error) {
	if len(spec.ImageMounts) == 0 {
		return nil, nil
	}
	if err := os.Mkdir(filepath.Join(bundle, imageVolDir), 0o700); err != nil {
		return nil, err
	}
	var out []skiffrt.Mount
	for i, m := range spec.ImageMounts {
		src, err := mountImageVolume(filepath.Join(bundle, imageVolDir, strconv.Itoa(i)), m)
		if err != nil {
			unmountImageVolumes(bundle)
			return nil, fmt.Errorf("imageMounts[%d]: %w", i, err)
		}
		out = append(out, skiffrt.Mount{HostPath: src, ContainerPath: m.ContainerPath, ReadOnly: true})
	}
	return out, nil
}

// mountImageVolume mounts one image volume at dir/fs and returns the
// directory to bind into the container.
func mountImageVolume(dir string, m skiffrt.ImageMount) (string, error) {
	fs := filepath.Join(dir, "fs")
	for _, d := range []string{dir, fs} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return "", err
		}
	}
	lower := slices.Clone(m.Layers)
	slices.Reverse(lower) // overlayfs lists the top first
	if len(lower) == 1 {
		// An overlay without an upper layer needs two lower ones: the
		// second is empty.
		empty := filepath.Join(dir, "empty")
		if err := os.Mkdir(empty, 0o500); err != nil {
			return "", err
		}
		lower = append(lower, empty)
	}
	data := "lowerdir=" + strings.Join(lower, ":")
	if len(data) > maxMountData {
		return "", invalid("layers: %d layers make mount options of %d bytes, past the kernel's %d", len(m.Layers), len(data), maxMountData)
	}
	if err := unix.Mount("overlay", fs, "overlay", unix.MS_RDONLY, data); err != nil {
		return "", fmt.Errorf("mount the image: %w", err)
	}
	if err := unix.Mount("", fs, "", unix.MS_PRIVATE, ""); err != nil {
		unmount(fs)
		return "", fmt.Errorf("make the image's mount private: %w", err)
	}
	if m.SubPath == "" {
		return fs, nil
	}
	src, err := resolveInRoot(fs, m.SubPath)
	if err != nil {
		unmount(fs)
		return "", err
	}
	return src, nil
}

// resolveInRoot resolves sub in the directory root as if root were the
// file system's root (symbolic links cannot lead out) and returns its path
// on the node, which must be a directory.
func resolveInRoot(root, sub string) (string, error) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open the image's root: %w", err)
	}
	defer unix.Close(rfd)
	fd, err := unix.Openat2(rfd, sub, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return "", invalid("subPath %q: not in the image", sub)
		}
		return "", fmt.Errorf("resolve subPath %q in the image: %w", sub, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", fmt.Errorf("resolve subPath %q in the image: %w", sub, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return "", invalid("subPath %q: not a directory in the image", sub)
	}
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", fmt.Errorf("resolve subPath %q in the image: %w", sub, err)
	}
	if p != root && !strings.HasPrefix(p, root+"/") {
		return "", invalid("subPath %q: resolves outside the image", sub) // cannot happen with RESOLVE_IN_ROOT
	}
	return p, nil
}

// unmountImageVolumes unmounts every image volume of bundle; idempotent.
func unmountImageVolumes(bundle string) error {
	dir := filepath.Join(bundle, imageVolDir)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list image volumes: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if err := unmount(filepath.Join(dir, e.Name(), "fs")); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
