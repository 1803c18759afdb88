package cri

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/runtime/image"
)

// gcTimeout bounds the image GC that follows a pull.
const gcTimeout = time.Minute

// PullImage pulls an image from its OCI registry into the node's store
// (see image.Store.Pull) with the request's credentials, if any, and
// returns its ID. Two kinds of reference are answered from the store
// without a registry when the store has them: one pinned by digest, and
// one without a registry host ("hello", "team/app:v1"), so that images
// imported on an air-gapped node never reach out. Every pull is followed
// by an image GC (see gcImages). Idempotent.
func (s *service) PullImage(ctx context.Context, req *runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, fmt.Errorf("pull image: %w: image is required", errInvalidArgument)
	}
	if localFirst(ref) {
		if img, err := s.images.Get(ref); err == nil {
			return &runtime.PullImageResponse{ImageRef: img.ID}, nil
		}
	}
	a := req.GetAuth()
	img, err := s.images.Pull(ctx, ref, image.Credentials{
		Username: a.GetUsername(), Password: a.GetPassword(), Auth: a.GetAuth(),
		IdentityToken: a.GetIdentityToken(), RegistryToken: a.GetRegistryToken(),
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("pulled image", "image", ref, "id", img.ID, "size", img.Size)
	gcCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), gcTimeout)
	defer cancel()
	if _, err := s.gcImages(gcCtx); err != nil {
		s.log.Warn("image gc after a pull", "err", err)
	}
	return &runtime.PullImageResponse{ImageRef: img.ID}, nil
}

// localFirst reports whether ref is pinned by digest or has no registry host.
func localFirst(ref string) bool {
	if strings.Contains(ref, "@") {
		return true
	}
	first, _, multi := strings.Cut(ref, "/")
	return !multi || !(strings.ContainsAny(first, ".:") || first == "localhost")
}

// gcImages runs the image store's GC with the images of every container
// this server knows (in any state: an exited container may restart) marked
// in use.
func (s *service) gcImages(ctx context.Context) (image.GCResult, error) {
	inUse := map[string]bool{}
	s.mu.RLock()
	for _, c := range s.containers {
		inUse[c.rec.ImageID] = true // ImageID never changes
		for _, m := range c.rec.Mounts {
			if m.ImageID != "" {
				inUse[m.ImageID] = true // image volumes
			}
		}
	}
	s.mu.RUnlock()
	res, err := s.images.GC(ctx, inUse)
	for _, id := range res.Removed {
		s.forget(id)
	}
	if len(res.Removed) > 0 {
		s.log.Info("image gc", "usage_percent", res.UsagePercent, "removed", res.Removed, "freed", res.Freed)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return res, err
	}
	return res, nil
}
