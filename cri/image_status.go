package cri

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/runtime/image"
)

// ImageStatus returns an image, or a response with no image when the store
// does not have it (as the CRI asks). With verbose, Info["info"] holds a
// JSON object with its media type and blob path.
func (s *service) ImageStatus(ctx context.Context, req *runtime.ImageStatusRequest) (*runtime.ImageStatusResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, fmt.Errorf("image status: %w: image is required", errInvalidArgument)
	}
	img, err := s.images.Get(ref)
	if errors.Is(err, image.ErrNotFound) {
		return &runtime.ImageStatusResponse{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("image status: %w", err)
	}
	resp := &runtime.ImageStatusResponse{Image: criImage(img)}
	if req.GetVerbose() {
		info, _ := json.Marshal(map[string]string{"mediaType": img.MediaType, "path": s.images.BlobPath(img)})
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}
