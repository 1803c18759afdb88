package apiserver

import (
	"strings"
	"testing"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// TestValidateResources: good quantities pass, bad ones are refused naming
// the field, the value and the reason.
func TestValidateResources(t *testing.T) {
	pod := func(res *skiffv1.ResourceRequirements, annotations map[string]string) *skiffv1.Pod {
		return &skiffv1.Pod{Metadata: &skiffv1.ObjectMeta{Name: "p", Namespace: "default", Annotations: annotations}, Spec: &skiffv1.PodSpec{
			RestartPolicy: "Always", Containers: []*skiffv1.Container{{Name: "c", Image: "hello", Resources: res}},
		}}
	}
	limits := func(kv ...string) *skiffv1.ResourceRequirements {
		r := &skiffv1.ResourceRequirements{Limits: map[string]string{}, Requests: map[string]string{}}
		for i := 0; i < len(kv); i += 2 {
			if name, ok := strings.CutPrefix(kv[i], "request:"); ok {
				r.Requests[name] = kv[i+1]
			} else {
				r.Limits[kv[i]] = kv[i+1]
			}
		}
		return r
	}
	for _, tt := range []struct {
		name        string
		res         *skiffv1.ResourceRequirements
		annotations map[string]string
		want        string // "": valid
	}{
		{name: "memory and cpu", res: limits("memory", "64Mi", "cpu", "500m", "request:memory", "32M", "request:cpu", "0.25")},
		{name: "empty", res: &skiffv1.ResourceRequirements{}},
		{name: "budget", res: nil, annotations: map[string]string{AnnotationCPUTimeBudget: "10s"}},
		{name: "bad memory", res: limits("memory", "lots"), want: `spec.containers[0].resources.limits[memory]: invalid value "lots": must be a quantity`},
		{name: "zero cpu", res: limits("cpu", "0"), want: `spec.containers[0].resources.limits[cpu]: invalid value "0": must be greater than zero`},
		{name: "below a page", res: limits("memory", "1Ki"), want: `spec.containers[0].resources.limits[memory]: invalid value "1Ki": must be at least 64Ki`},
		{name: "unknown resource", res: limits("gpu", "1"), want: `spec.containers[0].resources.limits: unsupported resource name "gpu"`},
		{name: "request over limit", res: limits("memory", "64Mi", "request:memory", "1Gi"), want: `spec.containers[0].resources.requests[memory]: invalid value "1Gi": must be less than or equal to the memory limit "64Mi"`},
		{name: "bad budget", annotations: map[string]string{AnnotationCPUTimeBudget: "forever"}, want: `metadata.annotations[skiff.dev/cpu-time-budget]: invalid value "forever"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fe := validatePod(pod(tt.res, tt.annotations))
			err := fe.err("pod", "p")
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("validate: %v, want valid", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("validate: %v, want %q", err, tt.want)
			}
		})
	}
}
