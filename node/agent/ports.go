package agent

import (
	"encoding/json"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// annotationContainerPorts is the container annotation in which the
// kubelet, and so the agent, tells the runtime the container's declared
// ports; skiff's CRI server opens a listening socket in the pod's network
// namespace for each TCP port of a Wasm container.
const annotationContainerPorts = "io.kubernetes.container.ports"

// containerPort is one entry of annotationContainerPorts, as the kubelet
// writes it.
type containerPort struct {
	Name          string `json:"name,omitempty"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol"`
}

// withPorts passes the container's declared ports on to the runtime.
func withPorts(cfg *runtimeapi.ContainerConfig, c *skiffv1.Container) *runtimeapi.ContainerConfig {
	if len(c.GetPorts()) == 0 {
		return cfg
	}
	ports := make([]containerPort, len(c.GetPorts()))
	for i, p := range c.GetPorts() {
		ports[i] = containerPort{Name: p.GetName(), ContainerPort: p.GetContainerPort(), Protocol: p.GetProtocol()}
		if ports[i].Protocol == "" {
			ports[i].Protocol = "TCP"
		}
	}
	b, _ := json.Marshal(ports) // cannot fail: plain strings and numbers
	if cfg.Annotations == nil {
		cfg.Annotations = map[string]string{}
	}
	cfg.Annotations[annotationContainerPorts] = string(b)
	return cfg
}
