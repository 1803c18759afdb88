package agent

import (
	"math/big"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/quantity"
)

// annotationCPUTimeBudget is the pod annotation that gives each of the
// pod's containers a CPU time budget; the agent passes it on as a container
// annotation of the same name, which the CRI server reads.
const annotationCPUTimeBudget = "skiff.dev/cpu-time-budget"

// cpuPeriod is the CFS period the kubelet uses, in microseconds.
const cpuPeriod = 100_000

// withResources fills in cfg's Linux resources from the container's
// resources, as the kubelet does (memory limit in bytes; cpu limit as a
// CFS quota over a 100ms period; cpu request as shares, 1024 a core), and
// passes on the pod's CPU time budget annotation. The apiserver has
// validated the quantities; one that does not parse is left out.
func withResources(cfg *runtimeapi.ContainerConfig, pod *skiffv1.Pod, c *skiffv1.Container) *runtimeapi.ContainerConfig {
	if v, ok := pod.GetMetadata().GetAnnotations()[annotationCPUTimeBudget]; ok {
		if cfg.Annotations == nil {
			cfg.Annotations = map[string]string{}
		}
		cfg.Annotations[annotationCPUTimeBudget] = v
	}
	res := c.GetResources()
	if res == nil {
		return cfg
	}
	r := &runtimeapi.LinuxContainerResources{}
	if q, ok := positive(res.GetLimits()["memory"]); ok {
		r.MemoryLimitInBytes = quantity.Ceil(q)
	}
	if q, ok := positive(res.GetLimits()["cpu"]); ok {
		r.CpuPeriod = cpuPeriod
		r.CpuQuota = max(quantity.Ceil(q.Mul(q, big.NewRat(cpuPeriod, 1))), 1000) // the kernel's floor is 1ms
	}
	if q, ok := positive(res.GetRequests()["cpu"]); ok {
		r.CpuShares = max(quantity.Ceil(q.Mul(q, big.NewRat(1024, 1))), 2)
	}
	if cfg.Linux == nil {
		cfg.Linux = &runtimeapi.LinuxContainerConfig{}
	}
	cfg.Linux.Resources = r
	return cfg
}

// positive reads a quantity the apiserver accepted; ok is false for an
// empty, unreadable or zero one.
func positive(s string) (*big.Rat, bool) {
	q, err := quantity.Parse(s)
	return q, err == nil && q.Sign() > 0
}
