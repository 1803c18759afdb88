package cri

import (
	"encoding/json"
	"fmt"
	"strings"
)

// AnnotationContainerPorts names the container annotation that lists the
// ports a container declares, as the kubelet writes it: a JSON array of
// {"name", "containerPort", "protocol"}. A Wasm container gets a listening
// socket, in its pod's network namespace, for each TCP port it declares
// (runtime/wasm's sockets); the CRI has no field for a container's ports,
// only the sandbox's port mappings, which do not say whose they are.
const AnnotationContainerPorts = "io.kubernetes.container.ports"

// containerPorts returns the TCP ports the annotations declare.
func containerPorts(annotations map[string]string) ([]int, error) {
	v, ok := annotations[AnnotationContainerPorts]
	if !ok {
		return nil, nil
	}
	var decl []struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
		Protocol      string `json:"protocol"`
	}
	if err := json.Unmarshal([]byte(v), &decl); err != nil {
		return nil, fmt.Errorf("%w: annotation %s: not a JSON array of ports: %v", errInvalidArgument, AnnotationContainerPorts, err)
	}
	var ports []int
	seen := map[int]bool{}
	for i, p := range decl {
		if p.ContainerPort < 1 || p.ContainerPort > 65535 {
			return nil, fmt.Errorf("%w: annotation %s: [%d].containerPort %d is not a port number", errInvalidArgument, AnnotationContainerPorts, i, p.ContainerPort)
		}
		if proto := strings.ToUpper(p.Protocol); proto != "" && proto != "TCP" {
			return nil, fmt.Errorf("%w: annotation %s: [%d].protocol %s: a Wasm container accepts TCP connections only", errInvalidArgument, AnnotationContainerPorts, i, p.Protocol)
		}
		if seen[p.ContainerPort] {
			return nil, fmt.Errorf("%w: annotation %s: [%d].containerPort %d is declared twice", errInvalidArgument, AnnotationContainerPorts, i, p.ContainerPort)
		}
		seen[p.ContainerPort] = true
		ports = append(ports, p.ContainerPort)
	}
	return ports, nil
}
