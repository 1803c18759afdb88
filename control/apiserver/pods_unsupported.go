package apiserver

import (
	"fmt"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// refuseUnsupported refuses the pod fields that the API describes but the
// node does not honour yet: a field skiff does not act on is an error that
// names it, never silently dropped. Each goes from here as its feature
// lands.
func refuseUnsupported(fe *fieldErrors, s *skiffv1.PodSpec) {
	const notYet = "not supported yet by skiff's nodes"
	if len(s.GetInitContainers()) > 0 {
		fe.add("spec.initContainers", notYet)
	}
	validateVolumes(fe, s) // honoured now: checked in volumes.go
	for i, c := range s.GetContainers() {
		path := fmt.Sprintf("spec.containers[%d]", i)
		if len(c.GetPorts()) > 0 {
			fe.add(path+".ports", notYet)
		}
		for name, p := range map[string]*skiffv1.Probe{"livenessProbe": c.GetLivenessProbe(), "readinessProbe": c.GetReadinessProbe(), "startupProbe": c.GetStartupProbe()} {
			if p != nil {
				fe.add(path+"."+name, notYet)
			}
		}
	}
}
