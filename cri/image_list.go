package cri

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

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

// criImage describes img: its names with a digest are its RepoDigests, the
// others its RepoTags.
func criImage(img image.Image) *runtime.Image {
	out := &runtime.Image{
		Id:   img.ID,
		Size: uint64(img.Size),
		Spec: &runtime.ImageSpec{Image: img.ID},
	}
	for _, n := range img.Names {
		if strings.Contains(n, "@") {
			out.RepoDigests = append(out.RepoDigests, n)
		} else {
			out.RepoTags = append(out.RepoTags, n)
		}
	}
	// The user an OCI image runs as, as containerd reports it: a numeric
	// user is the uid, a name the username (the group is not reported).
	if c := img.Config; c != nil && c.User != "" {
		u, _, _ := strings.Cut(c.User, ":")
		if uid, err := strconv.ParseInt(u, 10, 64); err == nil {
			out.Uid = &runtime.Int64Value{Value: uid}
		} else {
			out.Username = u
		}
	}
	return out
}
