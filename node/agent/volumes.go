package agent

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// Volumes: a pod's volumes become directories on the node, which CRI
// mounts into the containers that declare them (for Wasm, as WASI
// preopens at their mountPath):
//
//   - emptyDir: <VolumeDir>/<pod uid>/<name>, made at the first container
//     that mounts it, removed with the pod's sandbox.
//   - inline: the same, holding the volume's files; always read-only.
//   - hostPath: the node's directory, only under one of AllowedHostPaths
//     (after resolving symbolic links); none are allowed by default.

// volumeMounts prepares the volumes a container mounts and returns its CRI
// mounts. Its error names the volume or mount and the reason.
func (w *podWorker) volumeMounts(spec *skiffv1.Container) ([]*runtimeapi.Mount, error) {
	vols := map[string]*skiffv1.Volume{}
	for _, v := range w.pod.GetSpec().GetVolumes() {
		vols[v.GetName()] = v
	}
	var out []*runtimeapi.Mount
	for i, vm := range spec.GetVolumeMounts() {
		v := vols[vm.GetName()]
		if v == nil {
			return nil, fmt.Errorf("volumeMounts[%d]: no volume named %q", i, vm.GetName())
		}
		host, readOnly, err := w.prepareVolume(v)
		if err != nil {
			return nil, fmt.Errorf("volume %q: %w", v.GetName(), err)
		}
		out = append(out, &runtimeapi.Mount{
			ContainerPath: path.Clean(vm.GetMountPath()),
			HostPath:      host,
			Readonly:      vm.GetReadOnly() || readOnly,
		})
	}
	return out, nil
}

// podVolumeDir is where the pod's emptyDir and inline volumes live.
func (w *podWorker) podVolumeDir() string {
	return filepath.Join(w.a.cfg.VolumeDir, w.uid)
}

// prepareVolume returns the host directory of v, making it if it is the
// pod's own, and whether it is read-only whatever the mount says.
func (w *podWorker) prepareVolume(v *skiffv1.Volume) (string, bool, error) {
	switch {
	case v.GetHostPath() != nil:
		p, err := allowedHostPath(v.GetHostPath().GetPath(), w.a.cfg.AllowedHostPaths)
		return p, false, err
	case v.GetEmptyDir() != nil || v.GetInline() != nil:
		if w.a.cfg.VolumeDir == "" || w.uid == "" || strings.ContainsAny(w.uid, `/\`) || !filepath.IsLocal(v.GetName()) || strings.Contains(v.GetName(), "/") {
			return "", false, errors.New("the node keeps no pod volumes, or the name is not a plain file name")
		}
		dir := filepath.Join(w.podVolumeDir(), v.GetName())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", false, fmt.Errorf("make directory: %w", err)
		}
		if v.GetInline() == nil {
			return dir, false, nil
		}
		for name, content := range v.GetInline().GetFiles() {
			if !filepath.IsLocal(name) || strings.Contains(name, "/") {
				return "", false, fmt.Errorf("inline file %q: not a plain file name", name)
			}
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o444); err != nil && !errors.Is(err, os.ErrPermission) {
				return "", false, fmt.Errorf("write inline file %q: %w", name, err)
			}
		}
		return dir, true, nil
	}
	return "", false, errors.New("no volume source (emptyDir, hostPath or inline)")
}

// allowedHostPath resolves p and checks that it is a directory under one
// of allowed (resolved too).
func allowedHostPath(p string, allowed []string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("hostPath %q is not absolute", p)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("hostPath %q: %w", p, err)
	}
	for _, a := range allowed {
		ra, err := filepath.EvalSymlinks(a)
		if err != nil {
			continue
		}
		if real == ra || strings.HasPrefix(real, strings.TrimSuffix(ra, "/")+"/") {
			return real, nil
		}
	}
	return "", fmt.Errorf("hostPath %q is not under a path this node allows (skiff agent --allowed-host-path; allowed: %q)", p, allowed)
}

// removeVolumes removes the pod's emptyDir and inline volumes; it is
// called once the sandbox, and so every container using them, is gone.
func (w *podWorker) removeVolumes() {
	if w.a.cfg.VolumeDir == "" || w.uid == "" || strings.ContainsAny(w.uid, `/\`) {
		return
	}
	if err := os.RemoveAll(w.podVolumeDir()); err != nil {
		w.log.Warn("remove pod volumes", "err", err)
	}
}
