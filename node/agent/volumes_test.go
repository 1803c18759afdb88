package agent

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// TestVolumeMounts: emptyDir and inline volumes are per-pod directories
// (inline read-only, with its files), removed with the pod; a hostPath
// outside the allowed paths is refused, naming the volume.
func TestVolumeMounts(t *testing.T) {
	tmp := t.TempDir()
	allowed := filepath.Join(tmp, "allowed")
	if err := os.MkdirAll(filepath.Join(allowed, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	w := &podWorker{
		a:   &Agent{cfg: Config{VolumeDir: filepath.Join(tmp, "volumes"), AllowedHostPaths: []string{allowed}}},
		log: slog.New(slog.DiscardHandler),
		uid: "uid-1",
		pod: &skiffv1.Pod{Spec: &skiffv1.PodSpec{Volumes: []*skiffv1.Volume{
			{Name: "scratch", EmptyDir: &skiffv1.EmptyDirVolumeSource{}},
			{Name: "conf", Inline: &skiffv1.InlineVolumeSource{Files: map[string]string{"app.toml": "x=1"}}},
			{Name: "data", HostPath: &skiffv1.HostPathVolumeSource{Path: filepath.Join(allowed, "data")}},
			{Name: "etc", HostPath: &skiffv1.HostPathVolumeSource{Path: "/etc"}},
		}}},
	}
	ms, err := w.volumeMounts(&skiffv1.Container{VolumeMounts: []*skiffv1.VolumeMount{
		{Name: "scratch", MountPath: "/tmp"}, {Name: "conf", MountPath: "/etc/app"}, {Name: "data", MountPath: "/data", ReadOnly: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	podDir := filepath.Join(tmp, "volumes", "uid-1")
	want := []struct {
		path, host string
		ro         bool
	}{{"/tmp", filepath.Join(podDir, "scratch"), false}, {"/etc/app", filepath.Join(podDir, "conf"), true}, {"/data", filepath.Join(allowed, "data"), true}}
	for i, m := range ms {
		if m.ContainerPath != want[i].path || m.HostPath != want[i].host || m.Readonly != want[i].ro {
			t.Errorf("mount %d = %v, want %+v", i, m, want[i])
		}
	}
	if b, _ := os.ReadFile(filepath.Join(podDir, "conf", "app.toml")); string(b) != "x=1" {
		t.Errorf("inline file holds %q", b)
	}
	if _, err := w.volumeMounts(&skiffv1.Container{VolumeMounts: []*skiffv1.VolumeMount{{Name: "etc", MountPath: "/etc"}}}); err == nil ||
		!strings.Contains(err.Error(), `volume "etc"`) || !strings.Contains(err.Error(), "not under a path this node allows") {
		t.Errorf("hostPath /etc: %v", err)
	}
	w.removeVolumes()
	if _, err := os.Stat(podDir); !os.IsNotExist(err) {
		t.Errorf("pod volumes left after removal: %v", err)
	}
}
