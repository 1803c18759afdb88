package cri

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffrt "skiff.dev/skiff/runtime"
	"skiff.dev/skiff/runtime/image"
)

// mountRecord is a mount a container was created with.
type mountRecord struct {
	ContainerPath string `json:"containerPath"`
	HostPath      string `json:"hostPath"`
	ReadOnly      bool   `json:"readOnly,omitempty"`
	// Propagation: "" (private), "rslave" or "rshared" (OCI only).
	Propagation skiffrt.Propagation `json:"propagation,omitempty"`
	// An image volume (OCI only; HostPath is empty, ReadOnly is true):
	// the image as the client named it, the image it resolved to, and
	// the directory of it the container sees ("": its root).
	Image        string `json:"image,omitempty"`
	ImageID      string `json:"imageId,omitempty"`
	ImageSubPath string `json:"imageSubPath,omitempty"`
}

// selinuxEnabled reports whether the node runs SELinux: without it, an OCI
// mount's relabelling has nothing to do and is skipped, as containerd
// skips it.
func selinuxEnabled() bool {
	_, err := os.Stat("/sys/fs/selinux/enforce")
	return err == nil
}

// mountsOf checks a container's mounts and returns the ones to give it.
// The Wasm runtime honours a host directory at an absolute container path
// (a WASI preopen), read-only or not; it refuses, naming the field, what it
// cannot do: mount propagation, SELinux relabelling, ID mappings, mount
// options, image volumes, and a host path that is not a directory. An OCI
// container (oci) also honours mount propagation: HOST_TO_CONTAINER
// (rslave) and, for a privileged container, as the kubelet requires,
// BIDIRECTIONAL (rshared); the host path must then be on a shared (or,
// for HOST_TO_CONTAINER, slave) mount of the node, which the runtime
// checks. An OCI container also takes image volumes (image.image set, see
// imageMount); resolving their images is the caller's (resolveImageMounts).
func mountsOf(ms []*runtime.Mount, oci, privileged bool) ([]mountRecord, error) {
	var out []mountRecord
	seen := map[string]bool{}
	for i, m := range ms {
		field := fmt.Sprintf("config.mounts[%d]", i)
		var prop skiffrt.Propagation
		switch m.GetPropagation() {
		case runtime.MountPropagation_PROPAGATION_PRIVATE:
		case runtime.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
			prop = skiffrt.PropagationHostToContainer
		case runtime.MountPropagation_PROPAGATION_BIDIRECTIONAL:
			prop = skiffrt.PropagationBidirectional
		default:
			return nil, unsupported(field+".propagation", fmt.Sprintf("%v is not a mount propagation", m.GetPropagation()))
		}
		isImage := m.GetImage().GetImage() != "" || m.GetImageSubPath() != ""
		switch {
		case isImage && !oci:
			return nil, unsupported(field+".image", "image volumes are not supported by the Wasm runtime")
		case prop != "" && !oci:
			return nil, unsupported(field+".propagation", fmt.Sprintf("mount propagation %v is not supported by the Wasm runtime (only PROPAGATION_PRIVATE)", m.GetPropagation()))
		case prop == skiffrt.PropagationBidirectional && !privileged:
			return nil, unsupported(field+".propagation", "PROPAGATION_BIDIRECTIONAL needs a privileged container (config.linux.security_context.privileged)")
		case prop != "" && m.GetRecursiveReadOnly():
			return nil, unsupported(field+".recursive_read_only", fmt.Sprintf("a recursive read-only mount must be private, not %v", m.GetPropagation()))
		case m.GetSelinuxRelabel() && !oci:
			return nil, unsupported(field+".selinux_relabel", "SELinux relabelling is not supported by the Wasm runtime")
		case m.GetSelinuxRelabel() && selinuxEnabled():
			return nil, unsupported(field+".selinux_relabel", "SELinux relabelling is not supported by skiff on a node that enforces SELinux")
		case len(m.GetUidMappings()) > 0 || len(m.GetGidMappings()) > 0:
			return nil, unsupported(field+".uidMappings", "ID-mapped mounts are not supported by the Wasm runtime")
		case len(m.GetMountOptions()) > 0:
			return nil, unsupported(field+".mount_options", "mount options are not supported by the Wasm runtime")
		case m.GetRecursiveReadOnly() && !m.GetReadonly():
			return nil, fmt.Errorf("%w: %s.recursive_read_only: needs readonly", errInvalidArgument, field)
		}
		cp := m.GetContainerPath()
		if !path.IsAbs(cp) || path.Clean(cp) != cp {
			return nil, fmt.Errorf("%w: %s.container_path: %q is not an absolute, clean path", errInvalidArgument, field, cp)
		}
		if seen[cp] {
			return nil, fmt.Errorf("%w: %s.container_path: %q is mounted twice", errInvalidArgument, field, cp)
		}
		seen[cp] = true
		if isImage {
			r, err := imageMount(field, m)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
			continue
		}
		hp := m.GetHostPath()
		if !filepath.IsAbs(hp) {
			return nil, fmt.Errorf("%w: %s.host_path: %q is not absolute", errInvalidArgument, field, hp)
		}
		fi, err := os.Stat(hp)
		if err != nil {
			return nil, fmt.Errorf("%w: %s.host_path: %w", errInvalidArgument, field, err)
		}
		if !fi.IsDir() {
			return nil, unsupported(field+".host_path", fmt.Sprintf("%q is not a directory; the Wasm runtime mounts directories only", hp))
		}
		// A read-only mount has no mounts under it in WASI, so read-only is
		// recursive read-only.
		out = append(out, mountRecord{ContainerPath: cp, HostPath: hp, ReadOnly: m.GetReadonly(), Propagation: prop})
	}
	return out, nil
}

// imageMount checks an image volume, as the kubelet's ImageVolume
// feature sends it: an image (which the caller resolves), read-only,
// private, no host path, and an optional image_sub_path that is relative,
// clean and without "..". That the sub path exists in the image, and
// stays inside it through its links, the runtime checks.
func imageMount(field string, m *runtime.Mount) (mountRecord, error) {
	ref := m.GetImage().GetImage()
	sub := m.GetImageSubPath()
	switch {
	case ref == "":
		return mountRecord{}, fmt.Errorf("%w: %s.image.image: required with image_sub_path %q", errInvalidArgument, field, sub)
	case m.GetHostPath() != "":
		return mountRecord{}, fmt.Errorf("%w: %s.host_path: %q given with image %q; an image volume has no host path", errInvalidArgument, field, m.GetHostPath(), ref)
	case !m.GetReadonly():
		return mountRecord{}, fmt.Errorf("%w: %s.readonly: an image volume is read-only; set readonly", errInvalidArgument, field)
	case m.GetPropagation() != runtime.MountPropagation_PROPAGATION_PRIVATE:
		return mountRecord{}, unsupported(field+".propagation", fmt.Sprintf("an image volume is private, not %v", m.GetPropagation()))
	case m.GetSelinuxRelabel():
		return mountRecord{}, unsupported(field+".selinux_relabel", "an image volume is read-only; it cannot be relabelled")
	}
	if sub != "" {
		switch {
		case strings.IndexByte(sub, 0) >= 0, path.IsAbs(sub):
			return mountRecord{}, fmt.Errorf("%w: %s.image_sub_path: %q is not a path relative to the image's root", errInvalidArgument, field, sub)
		case slices.Contains(strings.Split(sub, "/"), ".."):
			return mountRecord{}, fmt.Errorf("%w: %s.image_sub_path: %q holds \"..\"", errInvalidArgument, field, sub)
		case path.Clean(sub) != sub || sub == ".":
			return mountRecord{}, fmt.Errorf("%w: %s.image_sub_path: %q is not a clean path (want e.g. %q)", errInvalidArgument, field, sub, path.Clean(sub))
		}
	}
	return mountRecord{ContainerPath: m.GetContainerPath(), ReadOnly: true, Image: ref, ImageSubPath: sub}, nil
}

// resolveImageMounts resolves the images of the image volumes in ms in
// the node's store, setting their ImageID: an image not in the store is
// NotFound, one that is not an OCI image (a Wasm module) InvalidArgument,
// each naming the field.
func resolveImageMounts(images imageStore, ms []mountRecord) error {
	for i := range ms {
		m := &ms[i]
		if m.Image == "" {
			continue
		}
		field := fmt.Sprintf("config.mounts[%d].image.image", i)
		img, err := images.Get(m.Image)
		if errors.Is(err, image.ErrNotFound) {
			return fmt.Errorf("%w: %s: image %q is not in the node's image store; pull it first", errNotFound, field, m.Image)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		if img.MediaType != image.MediaTypeOCI {
			return fmt.Errorf("%w: %s: image %q is a WebAssembly module; an image volume mounts an OCI image's file system", errInvalidArgument, field, m.Image)
		}
		m.ImageID = img.ID
	}
	return nil
}

// imageMounts is the runtime's view of the image volumes.
func (s *service) imageMounts(ms []mountRecord) ([]skiffrt.ImageMount, error) {
	var out []skiffrt.ImageMount
	for i, m := range ms {
		if m.ImageID == "" {
			continue
		}
		img, err := s.images.Get(m.ImageID)
		if err != nil {
			return nil, fmt.Errorf("image volume config.mounts[%d] (%s): %w", i, m.Image, err)
		}
		layers, err := s.images.Layers(img)
		if err != nil {
			return nil, fmt.Errorf("image volume config.mounts[%d] (%s): %w", i, m.Image, err)
		}
		out = append(out, skiffrt.ImageMount{Layers: layers, SubPath: m.ImageSubPath, ContainerPath: m.ContainerPath})
	}
	return out, nil
}

// runtimeMounts is the runtime's view of the host directory mounts.
func runtimeMounts(ms []mountRecord) []skiffrt.Mount {
	var out []skiffrt.Mount
	for _, m := range ms {
		if m.ImageID != "" || m.Image != "" {
			continue // imageMounts
		}
		out = append(out, skiffrt.Mount{HostPath: m.HostPath, ContainerPath: m.ContainerPath, ReadOnly: m.ReadOnly, Propagation: m.Propagation})
	}
	return out
}

// criMounts is what ContainerStatus reports.
func criMounts(ms []mountRecord) []*runtime.Mount {
	var out []*runtime.Mount
	for _, m := range ms {
		prop := runtime.MountPropagation_PROPAGATION_PRIVATE
		switch m.Propagation {
		case skiffrt.PropagationHostToContainer:
			prop = runtime.MountPropagation_PROPAGATION_HOST_TO_CONTAINER
		case skiffrt.PropagationBidirectional:
			prop = runtime.MountPropagation_PROPAGATION_BIDIRECTIONAL
		}
		cm := &runtime.Mount{
			ContainerPath:     m.ContainerPath,
			HostPath:          m.HostPath,
			Readonly:          m.ReadOnly,
			RecursiveReadOnly: m.ReadOnly,
			Propagation:       prop,
		}
		if m.Image != "" {
			cm.Image = &runtime.ImageSpec{Image: m.Image, ImageRef: m.ImageID}
			cm.ImageSubPath = m.ImageSubPath
		}
		out = append(out, cm)
	}
	return out
}
