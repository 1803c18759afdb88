package cri

import (
	"fmt"
	"os"
	"path"
	"path/filepath"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffrt "skiff.dev/skiff/runtime"
)

// mountRecord is a mount a container was created with.
type mountRecord struct {
	ContainerPath string `json:"containerPath"`
	HostPath      string `json:"hostPath"`
	ReadOnly      bool   `json:"readOnly,omitempty"`
	// Propagation: "" (private), "rslave" or "rshared" (OCI only).
	Propagation skiffrt.Propagation `json:"propagation,omitempty"`
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
// checks.
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
		switch {
		case m.GetImage().GetImage() != "" || m.GetImageSubPath() != "":
			return nil, unsupported(field+".image", "image volumes are not supported by skiff")
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

// wasmMounts is the runtime's view of the mounts.
func runtimeMounts(ms []mountRecord) []skiffrt.Mount {
	var out []skiffrt.Mount
	for _, m := range ms {
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
		out = append(out, &runtime.Mount{
			ContainerPath:     m.ContainerPath,
			HostPath:          m.HostPath,
			Readonly:          m.ReadOnly,
			RecursiveReadOnly: m.ReadOnly,
			Propagation:       prop,
		})
	}
	return out
}
