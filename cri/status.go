package cri

import (
	"context"
	"fmt"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffrt "skiff.dev/skiff/runtime"
)

// handler resolves a sandbox's runtime handler: the one it names, or the
// node's default when it names none.
func (s *service) handler(name string) (string, error) {
	if name == "" {
		name = s.defaultHandler
	}
	if _, ok := s.runtimes[name]; !ok {
		return "", fmt.Errorf("%w: runtime handler %q is not available on this node (available: %q)", errInvalidArgument, name, sortedKeys(s.runtimes))
	}
	return name, nil
}

// runtimeOf is the runtime of a sandbox's handler.
func (s *service) runtimeOf(sb *sandboxRecord) (skiffrt.Runtime, error) {
	rt, ok := s.runtimes[sb.RuntimeHandler]
	if !ok {
		return nil, fmt.Errorf("%w: sandbox %s runs in runtime handler %q, which this node no longer has", errFailedPrecondition, sb.ID, sb.RuntimeHandler)
	}
	return rt, nil
}

// forget tells every runtime that an image has left the node.
func (s *service) forget(imageID string) {
	for _, rt := range s.runtimes {
		rt.Forget(imageID)
	}
}

// Status reports the RuntimeReady and NetworkReady conditions and the
// runtime handlers this node offers.
func (s *service) Status(ctx context.Context, req *runtime.StatusRequest) (*runtime.StatusResponse, error) {
	netReady, netReason := s.network.Ready()
	network := &runtime.RuntimeCondition{Type: runtime.NetworkReady, Status: netReady}
	if !netReady {
		network.Reason = "NetworkPluginNotReady"
		network.Message = netReason
	}
	var handlers []*runtime.RuntimeHandler
	for _, h := range sortedKeys(s.runtimes) {
		handlers = append(handlers, &runtime.RuntimeHandler{Name: h, Features: &runtime.RuntimeHandlerFeatures{}})
	}
	return &runtime.StatusResponse{
		Status: &runtime.RuntimeStatus{Conditions: []*runtime.RuntimeCondition{
			{Type: runtime.RuntimeReady, Status: true},
			network,
		}},
		RuntimeHandlers: handlers,
	}, nil
}
