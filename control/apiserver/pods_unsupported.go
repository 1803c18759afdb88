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
	validateInitContainers(fe, s) // refuses what init containers do not honour yet
	validateVolumes(fe, s)
	for i, c := range s.GetContainers() {
		validatePortsAndProbes(fe, fmt.Sprintf("spec.containers[%d]", i), c)
	}
}
