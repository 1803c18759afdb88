package cri

import (
	"context"
	"strings"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ListPodSandbox lists sandboxes, oldest first, filtered by ID (or ID
// prefix), state and labels.
func (s *service) ListPodSandbox(ctx context.Context, req *runtime.ListPodSandboxRequest) (*runtime.ListPodSandboxResponse, error) {
	f := req.GetFilter()
	s.mu.RLock()
	all := make([]*sandbox, 0, len(s.sandboxes))
	for _, id := range sortedKeys(s.sandboxes) {
		if strings.HasPrefix(id, f.GetId()) {
			all = append(all, s.sandboxes[id])
		}
	}
	s.mu.RUnlock()

	var items []*runtime.PodSandbox
	for _, sb := range all {
		rec := sb.snapshot()
		if f.GetState() != nil && rec.criState() != f.GetState().GetState() {
			continue
		}
		if !matchLabels(rec.Labels, f.GetLabelSelector()) {
			continue
		}
		items = append(items, &runtime.PodSandbox{
			Id:             rec.ID,
			Metadata:       rec.metadata(),
			State:          rec.criState(),
			CreatedAt:      rec.CreatedAt,
			Labels:         copyMap(rec.Labels),
			Annotations:    copyMap(rec.Annotations),
			RuntimeHandler: rec.RuntimeHandler,
		})
	}
	sortByCreated(items, func(p *runtime.PodSandbox) int64 { return p.CreatedAt })
	return &runtime.ListPodSandboxResponse{Items: items}, nil
}
