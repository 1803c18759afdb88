package apiserver

import (
	"strings"
	"testing"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// TestUnsupportedPodFieldsRefused: a field the API describes but the nodes
// do not honour yet is refused by name.
func TestUnsupportedPodFieldsRefused(t *testing.T) {
	pod := func(edit func(*skiffv1.PodSpec)) *skiffv1.Pod {
		p := &skiffv1.Pod{Metadata: &skiffv1.ObjectMeta{Name: "p", Namespace: "default"}, Spec: &skiffv1.PodSpec{
			RestartPolicy: "Always", Containers: []*skiffv1.Container{{Name: "c", Image: "hello"}},
		}}
		edit(p.Spec)
		return p
	}
	for _, tt := range []struct {
		name, field string
		edit        func(*skiffv1.PodSpec)
	}{
		{"resources of an init container", "spec.initContainers[0].resources", func(s *skiffv1.PodSpec) {
			s.InitContainers = []*skiffv1.Container{{Name: "i", Image: "x", Resources: &skiffv1.ResourceRequirements{Limits: map[string]string{"memory": "64Mi"}}}}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fe := validatePod(pod(tt.edit))
			if got := fe.err("pod", "p"); got == nil || !strings.Contains(got.Error(), tt.field+": not supported yet") {
				t.Errorf("validate: %v, want %s refused", got, tt.field)
			}
		})
	}
	if fe := validatePod(pod(func(*skiffv1.PodSpec) {})); len(fe) != 0 {
		t.Errorf("a plain pod: %v", fe)
	}
}
