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
	validateInitContainers(fe, s) // honoured: checked, not refused
	if len(s.GetVolumes()) > 0 {
		fe.add("spec.volumes", notYet)
	}
	for i, c := range s.GetContainers() {
		path := fmt.Sprintf("spec.containers[%d]", i)
		if c.GetResources() != nil {
			fe.add(path+".resources", notYet)
		}
		if len(c.GetVolumeMounts()) > 0 {
			fe.add(path+".volumeMounts", notYet)
		}
		validatePortsAndProbes(fe, path, c) // honoured: checked, not refused
	}
}
