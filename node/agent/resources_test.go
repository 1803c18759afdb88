package agent

import (
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// TestWithResources maps a container's resources and the pod's CPU budget
// annotation to what the CRI server reads, as the kubelet would.
func TestWithResources(t *testing.T) {
	for _, tt := range []struct {
		name        string
		res         *skiffv1.ResourceRequirements
		annotations map[string]string
		want        *runtimeapi.ContainerConfig
	}{
		{name: "none", want: &runtimeapi.ContainerConfig{}},
		{name: "limits and requests",
			res:  &skiffv1.ResourceRequirements{Limits: map[string]string{"memory": "64Mi", "cpu": "500m"}, Requests: map[string]string{"cpu": "250m", "memory": "1G"}},
			want: &runtimeapi.ContainerConfig{Linux: &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20, CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 256}}}},
		{name: "decimal memory rounds up", res: &skiffv1.ResourceRequirements{Limits: map[string]string{"memory": "1.5k"}},
			want: &runtimeapi.ContainerConfig{Linux: &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 1500}}}},
		{name: "budget", annotations: map[string]string{annotationCPUTimeBudget: "10s", "other": "x"},
			want: &runtimeapi.ContainerConfig{Annotations: map[string]string{annotationCPUTimeBudget: "10s"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pod := &skiffv1.Pod{Metadata: &skiffv1.ObjectMeta{Name: "p", Annotations: tt.annotations}}
			got := withResources(&runtimeapi.ContainerConfig{}, pod, &skiffv1.Container{Name: "c", Resources: tt.res})
			if !proto.Equal(got, tt.want) {
				t.Errorf("withResources = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAllocatable(t *testing.T) {
	got := allocatable(2, 24<<20, DefaultMaxPods)
	if got["cpu"] != "1900m" || got["memory"] != "24903680Ki" || got["pods"] != "110" {
		t.Errorf("allocatable(2 CPUs, 24Gi) = %v", got)
	}
	if got := allocatable(1, 100<<10, DefaultMaxPods); got["memory"] != "0Ki" {
		t.Errorf("allocatable(100Mi) memory = %v, want 0Ki", got["memory"])
	}
}

// TestWithPorts writes the container's ports in the kubelet's annotation,
// protocol TCP when unset.
func TestWithPorts(t *testing.T) {
	got := withPorts(&runtimeapi.ContainerConfig{}, &skiffv1.Container{Name: "c", Ports: []*skiffv1.ContainerPort{{Name: "http", ContainerPort: 8080}, {ContainerPort: 53, Protocol: "UDP"}}})
	want := `[{"name":"http","containerPort":8080,"protocol":"TCP"},{"containerPort":53,"protocol":"UDP"}]`
	if got.Annotations[annotationContainerPorts] != want {
		t.Errorf("annotation = %s, want %s", got.Annotations[annotationContainerPorts], want)
	}
	if got := withPorts(&runtimeapi.ContainerConfig{}, &skiffv1.Container{Name: "c"}); got.Annotations != nil {
		t.Errorf("no ports: annotations = %v, want none", got.Annotations)
	}
}
