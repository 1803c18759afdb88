package agent

import (
	"math/big"
	"regexp"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
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
	if q, ok := quantity(res.GetLimits()["memory"]); ok {
		r.MemoryLimitInBytes = ceil(q)
	}
	if q, ok := quantity(res.GetLimits()["cpu"]); ok {
		r.CpuPeriod = cpuPeriod
		r.CpuQuota = max(ceil(q.Mul(q, big.NewRat(cpuPeriod, 1))), 1000) // the kernel's floor is 1ms
	}
	if q, ok := quantity(res.GetRequests()["cpu"]); ok {
		r.CpuShares = max(ceil(q.Mul(q, big.NewRat(1024, 1))), 2)
	}
	if cfg.Linux == nil {
		cfg.Linux = &runtimeapi.LinuxContainerConfig{}
	}
	cfg.Linux.Resources = r
	return cfg
}

var quantityPattern = regexp.MustCompile(`^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$`)

var quantitySuffixes = map[string]*big.Rat{
	"": big.NewRat(1, 1), "m": big.NewRat(1, 1000),
	"k": big.NewRat(1e3, 1), "M": big.NewRat(1e6, 1), "G": big.NewRat(1e9, 1),
	"T": big.NewRat(1e12, 1), "P": big.NewRat(1e15, 1), "E": big.NewRat(1e18, 1),
	"Ki": big.NewRat(1<<10, 1), "Mi": big.NewRat(1<<20, 1), "Gi": big.NewRat(1<<30, 1),
	"Ti": big.NewRat(1<<40, 1), "Pi": big.NewRat(1<<50, 1), "Ei": big.NewRat(1<<60, 1),
}

// quantity parses a Kubernetes quantity in the forms the apiserver accepts
// ("500m", "2", "64Mi", "1G"); ok is false for anything else, zero, or
// more than 2^62.
func quantity(s string) (*big.Rat, bool) {
	m := quantityPattern.FindStringSubmatch(s)
	if m == nil {
		return nil, false
	}
	n, ok := new(big.Rat).SetString(m[1])
	if !ok {
		return nil, false
	}
	n.Mul(n, quantitySuffixes[m[2]])
	if n.Sign() <= 0 || n.Cmp(new(big.Rat).SetInt64(1<<62)) > 0 {
		return nil, false
	}
	return n, true
}

// ceil rounds q up to an integer.
func ceil(q *big.Rat) int64 {
	n := new(big.Int).Quo(q.Num(), q.Denom())
	if new(big.Rat).SetInt(n).Cmp(q) < 0 {
		n.Add(n, big.NewInt(1))
	}
	return n.Int64()
}
