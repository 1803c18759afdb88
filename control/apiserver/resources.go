package apiserver

import (
	"fmt"
	"math/big"
	"sort"
	"time"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/quantity"
)

// AnnotationCPUTimeBudget is the pod annotation that gives each of the
// pod's Wasm containers a budget of CPU time (a Go duration, e.g. "10s"):
// a container that has used it up is killed, reason CPUBudgetExceeded.
// The node passes it to the CRI server as a container annotation of the
// same name.
const AnnotationCPUTimeBudget = "skiff.dev/cpu-time-budget"

// validateResources checks the containers' resources: only "cpu" and
// "memory", quantities as Kubernetes writes them ("500m", "1", "64Mi",
// "1G"), positive, a memory limit at least one WebAssembly page (64Ki), and
// a request no more than its limit. It also checks the CPU time budget
// annotation.
func validateResources(fe *fieldErrors, p *skiffv1.Pod) {
	if v, ok := p.GetMetadata().GetAnnotations()[AnnotationCPUTimeBudget]; ok {
		if d, err := time.ParseDuration(v); err != nil || d < time.Millisecond {
			fe.add("metadata.annotations["+AnnotationCPUTimeBudget+"]", "invalid value %q: must be a duration of at least 1ms, such as \"10s\"", v)
		}
	}
	for i, c := range p.GetSpec().GetContainers() {
		res := c.GetResources()
		if res == nil {
			continue
		}
		path := fmt.Sprintf("spec.containers[%d].resources", i)
		limits := checkQuantities(fe, path+".limits", res.GetLimits())
		requests := checkQuantities(fe, path+".requests", res.GetRequests())
		if l, ok := limits["memory"]; ok && l.Cmp(big.NewRat(64<<10, 1)) < 0 {
			fe.add(path+".limits[memory]", "invalid value %q: must be at least 64Ki, one WebAssembly page", res.GetLimits()["memory"])
		}
		for _, name := range []string{"cpu", "memory"} {
			l, lok := limits[name]
			r, rok := requests[name]
			if lok && rok && r.Cmp(l) > 0 {
				fe.add(path+".requests["+name+"]", "invalid value %q: must be less than or equal to the %s limit %q", res.GetRequests()[name], name, res.GetLimits()[name])
			}
		}
	}
}

// checkQuantities parses a map of resource quantities, adding an error for
// each bad name or value, and returns the good ones.
func checkQuantities(fe *fieldErrors, path string, m map[string]string) map[string]*big.Rat {
	out := map[string]*big.Rat{}
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		v := m[name]
		if name != "cpu" && name != "memory" {
			fe.add(path, "unsupported resource name %q: supported names are \"cpu\", \"memory\"", name)
			continue
		}
		q, err := quantity.Parse(v)
		if err != nil {
			fe.add(path+"["+name+"]", "invalid value %q: %v", v, err)
			continue
		}
		if q.Sign() <= 0 {
			fe.add(path+"["+name+"]", "invalid value %q: must be greater than zero", v)
			continue
		}
		out[name] = q
	}
	return out
}
