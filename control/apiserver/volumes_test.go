package apiserver

import (
	"strings"
	"testing"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

func TestVolumesValidated(t *testing.T) {
	pod := func(edit func(*skiffv1.PodSpec)) *skiffv1.Pod {
		p := &skiffv1.Pod{Metadata: &skiffv1.ObjectMeta{Name: "p", Namespace: "default"}, Spec: &skiffv1.PodSpec{
			RestartPolicy: "Always", Containers: []*skiffv1.Container{{Name: "c", Image: "hello"}},
			Volumes: []*skiffv1.Volume{
				{Name: "scratch", EmptyDir: &skiffv1.EmptyDirVolumeSource{}},
				{Name: "conf", Inline: &skiffv1.InlineVolumeSource{Files: map[string]string{"app.toml": "x=1"}}},
				{Name: "host", HostPath: &skiffv1.HostPathVolumeSource{Path: "/srv/data"}},
			},
		}}
		p.Spec.Containers[0].VolumeMounts = []*skiffv1.VolumeMount{{Name: "scratch", MountPath: "/tmp"}, {Name: "conf", MountPath: "/etc/app", ReadOnly: true}}
		edit(p.Spec)
		return p
	}
	if fe := validatePod(pod(func(*skiffv1.PodSpec) {})); len(fe) != 0 {
		t.Fatalf("a pod with volumes: %v", fe)
	}
	for _, tt := range []struct {
		name, want string
		edit       func(*skiffv1.PodSpec)
	}{
		{"no source", "spec.volumes[0]: exactly one of", func(s *skiffv1.PodSpec) { s.Volumes[0].EmptyDir = nil }},
		{"two sources", "spec.volumes[0]: exactly one of", func(s *skiffv1.PodSpec) { s.Volumes[0].Inline = &skiffv1.InlineVolumeSource{} }},
		{"size limit", "spec.volumes[0].emptyDir.sizeLimit: not supported yet", func(s *skiffv1.PodSpec) { s.Volumes[0].EmptyDir.SizeLimit = "64Mi" }},
		{"bad name", "spec.volumes[0].name: invalid value \"../x\"", func(s *skiffv1.PodSpec) { s.Volumes[0].Name = "../x" }},
		{"duplicate", "spec.volumes[1].name: duplicate volume", func(s *skiffv1.PodSpec) { s.Volumes[1].Name = "scratch" }},
		{"relative host path", "spec.volumes[2].hostPath.path: invalid value \"srv\"", func(s *skiffv1.PodSpec) { s.Volumes[2].HostPath.Path = "srv" }},
		{"inline file name", "spec.volumes[1].inline.files[../evil]", func(s *skiffv1.PodSpec) { s.Volumes[1].Inline.Files["../evil"] = "x" }},
		{"unknown volume", "spec.containers[0].volumeMounts[0].name: no volume named \"nope\"", func(s *skiffv1.PodSpec) { s.Containers[0].VolumeMounts[0].Name = "nope" }},
		{"relative mount path", "spec.containers[0].volumeMounts[0].mountPath: invalid value \"tmp\"", func(s *skiffv1.PodSpec) { s.Containers[0].VolumeMounts[0].MountPath = "tmp" }},
		{"mounted twice", "spec.containers[0].volumeMounts[1].mountPath: \"/tmp\" is mounted twice", func(s *skiffv1.PodSpec) { s.Containers[0].VolumeMounts[1].MountPath = "/tmp" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := validatePod(pod(tt.edit)).err("pod", "p")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("validate: %v, want %q", err, tt.want)
			}
		})
	}
}
