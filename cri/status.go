package cri

import (
	"context"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Runtime handlers. The empty handler means the default, wasm.
const (
	handlerWasm    = "wasm"
	handlerDefault = ""
)

// Status reports the RuntimeReady and NetworkReady conditions and the
// runtime handlers this node offers.
func (s *service) Status(ctx context.Context, req *runtime.StatusRequest) (*runtime.StatusResponse, error) {
	netReady, netReason := s.network.Ready()
	network := &runtime.RuntimeCondition{Type: runtime.NetworkReady, Status: netReady}
	if !netReady {
		network.Reason = "NetworkPluginNotReady"
		network.Message = netReason
	}
	return &runtime.StatusResponse{
		Status: &runtime.RuntimeStatus{Conditions: []*runtime.RuntimeCondition{
			{Type: runtime.RuntimeReady, Status: true},
			network,
		}},
		RuntimeHandlers: []*runtime.RuntimeHandler{
			{Name: handlerWasm, Features: &runtime.RuntimeHandlerFeatures{}},
		},
	}, nil
}
