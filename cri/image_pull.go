package cri

import (
	"context"
	"errors"
	"fmt"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/runtime/image"
)

// PullImage pulls nothing: there are no registries yet. An image already in
// the node's store succeeds with its ID; any other is NotFound.
func (s *service) PullImage(ctx context.Context, req *runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, fmt.Errorf("pull image: %w: image is required", errInvalidArgument)
	}
	img, err := s.images.Get(ref)
	if errors.Is(err, image.ErrNotFound) {
		return nil, fmt.Errorf("pull image: %w: image %q is not in the node's image store; import it with `skiff image import`", errNotFound, ref)
	}
	if err != nil {
		return nil, fmt.Errorf("pull image: %w", err)
	}
	return &runtime.PullImageResponse{ImageRef: img.ID}, nil
}
