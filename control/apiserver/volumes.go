package apiserver

import (
	"fmt"
	"path"
	"strings"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// Bounds of a pod's volumes: inline files are stored in the pod object.
const (
	maxVolumes         = 64
	maxInlineFiles     = 64
	maxInlineFileBytes = 256 << 10
)

// validateVolumes checks spec.volumes and every container's volumeMounts:
// unique plain names, exactly one source each, absolute host paths, plain
// inline file names, and mounts of declared volumes at distinct absolute
// clean paths. Whether a host path is allowed is the node's decision.
func validateVolumes(fe *fieldErrors, s *skiffv1.PodSpec) {
	if len(s.GetVolumes()) > maxVolumes {
		fe.add("spec.volumes", "too many volumes: %d (at most %d)", len(s.GetVolumes()), maxVolumes)
		return
	}
	names := map[string]bool{}
	for i, v := range s.GetVolumes() {
		p := fmt.Sprintf("spec.volumes[%d]", i)
		if !plainName(v.GetName()) {
			fe.add(p+".name", "invalid value %q: a volume name is a plain name (letters, digits, '-', '_', '.')", v.GetName())
		} else if names[v.GetName()] {
			fe.add(p+".name", "duplicate volume %q", v.GetName())
		}
		names[v.GetName()] = true
		sources := 0
		if v.GetEmptyDir() != nil {
			sources++
			if v.GetEmptyDir().GetSizeLimit() != "" {
				fe.add(p+".emptyDir.sizeLimit", "not supported yet by skiff's nodes")
			}
		}
		if h := v.GetHostPath(); h != nil {
			sources++
			if hp := h.GetPath(); !path.IsAbs(hp) || path.Clean(hp) != hp {
				fe.add(p+".hostPath.path", "invalid value %q: must be an absolute, clean path", hp)
			}
		}
		if in := v.GetInline(); in != nil {
			sources++
			if len(in.GetFiles()) > maxInlineFiles {
				fe.add(p+".inline.files", "too many files: %d (at most %d)", len(in.GetFiles()), maxInlineFiles)
			}
			for name, content := range in.GetFiles() {
				if !plainName(name) {
					fe.add(p+".inline.files["+name+"]", "invalid file name: a plain name (letters, digits, '-', '_', '.')")
				}
				if len(content) > maxInlineFileBytes {
					fe.add(p+".inline.files["+name+"]", "too large: %d bytes (at most %d)", len(content), maxInlineFileBytes)
				}
			}
		}
		if sources != 1 {
			fe.add(p, "exactly one of emptyDir, hostPath and inline must be set (%d are)", sources)
		}
	}
	for i, c := range s.GetContainers() {
		paths := map[string]bool{}
		for j, m := range c.GetVolumeMounts() {
			p := fmt.Sprintf("spec.containers[%d].volumeMounts[%d]", i, j)
			if !names[m.GetName()] {
				fe.add(p+".name", "no volume named %q in spec.volumes", m.GetName())
			}
			mp := m.GetMountPath()
			switch {
			case !path.IsAbs(mp) || path.Clean(mp) != mp:
				fe.add(p+".mountPath", "invalid value %q: must be an absolute, clean path", mp)
			case paths[mp]:
				fe.add(p+".mountPath", "%q is mounted twice", mp)
			}
			paths[mp] = true
		}
	}
}

// plainName is a file or volume name: no separators, not "." or "..".
func plainName(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > 253 {
		return false
	}
	return strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == ""
}
