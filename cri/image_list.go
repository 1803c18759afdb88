package cri

import (
	"context"
	"errors"
	"fmt"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/runtime/image"
)

// ListImages lists the images in the node's store, or the one the filter names.
func (s *service) ListImages(ctx context.Context, req *runtime.ListImagesRequest) (*runtime.ListImagesResponse, error) {
	if ref := req.GetFilter().GetImage().GetImage(); ref != "" {
		img, err := s.images.Get(ref)
		if errors.Is(err, image.ErrNotFound) {
			return &runtime.ListImagesResponse{}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list images: %w", err)
		}
		return &runtime.ListImagesResponse{Images: []*runtime.Image{criImage(img)}}, nil
	}
	imgs, err := s.images.List()
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	out := make([]*runtime.Image, 0, len(imgs))
	for _, img := range imgs {
		out = append(out, criImage(img))
	}
	return &runtime.ListImagesResponse{Images: out}, nil
}

func criImage(img image.Image) *runtime.Image {
	return &runtime.Image{
		Id:       img.ID,
		RepoTags: img.Names,
		Size:     uint64(img.Size),
		Spec:     &runtime.ImageSpec{Image: img.ID},
	}
}
