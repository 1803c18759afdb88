package cri

import (
	"context"
	"strings"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ListContainers lists containers, oldest first, filtered by ID (or ID
// prefix), sandbox ID (or prefix), state and labels.
func (s *service) ListContainers(ctx context.Context, req *runtime.ListContainersRequest) (*runtime.ListContainersResponse, error) {
	f := req.GetFilter()
	s.mu.RLock()
	all := make([]*container, 0, len(s.containers))
	for _, id := range sortedKeys(s.containers) {
		c := s.containers[id]
		if strings.HasPrefix(id, f.GetId()) && strings.HasPrefix(c.rec.SandboxID, f.GetPodSandboxId()) {
			all = append(all, c)
		}
	}
	s.mu.RUnlock()

	var items []*runtime.Container
	for _, c := range all {
		rec := c.snapshot()
		if f.GetState() != nil && rec.criState() != f.GetState().GetState() {
			continue
		}
		if !matchLabels(rec.Labels, f.GetLabelSelector()) {
			continue
		}
		items = append(items, &runtime.Container{
			Id:           rec.ID,
			PodSandboxId: rec.SandboxID,
			Metadata:     rec.metadata(),
			Image:        rec.imageSpec(),
			ImageRef:     rec.ImageID,
			ImageId:      rec.ImageID,
			State:        rec.criState(),
			CreatedAt:    rec.CreatedAt,
			Labels:       copyMap(rec.Labels),
			Annotations:  copyMap(rec.Annotations),
		})
	}
	sortByCreated(items, func(c *runtime.Container) int64 { return c.CreatedAt })
	return &runtime.ListContainersResponse{Containers: items}, nil
}
