package cri

import (
	"context"
	"errors"
	"fmt"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/runtime/image"
)

// RemoveImage removes an image name (or, given an ID, the image and all its
// names) from the store. It is idempotent: an unknown image succeeds.
// Containers already created keep their compiled module.
func (s *service) RemoveImage(ctx context.Context, req *runtime.RemoveImageRequest) (*runtime.RemoveImageResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, fmt.Errorf("remove image: %w: image is required", errInvalidArgument)
	}
	if err := s.images.Remove(ref); err != nil && !errors.Is(err, image.ErrNotFound) {
		return nil, fmt.Errorf("remove image: %w", err)
	}
	return &runtime.RemoveImageResponse{}, nil
}
