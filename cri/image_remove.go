package cri

import (
	"context"
	"errors"
	"fmt"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/runtime/image"
)

// RemoveImage removes the image that the request names (by a name or an
// ID) with all its names, tags and repository digests alike, as
// containerd does. It is idempotent: an unknown image succeeds. Containers
// already created keep their compiled module; the module's compiled code
// leaves the node's caches with the last of them.
func (s *service) RemoveImage(ctx context.Context, req *runtime.RemoveImageRequest) (*runtime.RemoveImageResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, fmt.Errorf("remove image: %w: image is required", errInvalidArgument)
	}
	img, err := s.images.Get(ref)
	if errors.Is(err, image.ErrNotFound) {
		return &runtime.RemoveImageResponse{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("remove image: %w", err)
	}
	if err := s.images.Remove(img.ID); err != nil && !errors.Is(err, image.ErrNotFound) {
		return nil, fmt.Errorf("remove image: %w", err)
	}
	s.forget(img.ID)
	return &runtime.RemoveImageResponse{}, nil
}
