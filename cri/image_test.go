package cri

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

func TestImageService(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	img := e.importImage("hello", wasmtest.Build())
	spec := func(ref string) *runtime.ImageSpec { return &runtime.ImageSpec{Image: ref} }

	list, err := e.is.ListImages(ctx, &runtime.ListImagesRequest{})
	if err != nil || len(list.Images) != 1 {
		t.Fatalf("ListImages = %v, %v", list, err)
	}
	got := list.Images[0]
	if got.Id != img.ID || len(got.RepoTags) != 1 || got.RepoTags[0] != "hello:latest" || got.Size != uint64(img.Size) {
		t.Errorf("image = %v", got)
	}
	list, _ = e.is.ListImages(ctx, &runtime.ListImagesRequest{Filter: &runtime.ImageFilter{Image: spec("nope")}})
	if len(list.Images) != 0 {
		t.Errorf("filtered list = %v", list.Images)
	}

	for _, ref := range []string{"hello", "hello:latest", img.ID} {
		st, err := e.is.ImageStatus(ctx, &runtime.ImageStatusRequest{Image: spec(ref), Verbose: true})
		if err != nil || st.Image.GetId() != img.ID || st.Info["info"] == "" {
			t.Errorf("ImageStatus(%q) = %v, %v", ref, st, err)
		}
	}
	st, err := e.is.ImageStatus(ctx, &runtime.ImageStatusRequest{Image: spec("nope")})
	if err != nil || st.Image != nil {
		t.Errorf("ImageStatus(missing) = %v, %v; want no image, no error", st, err)
	}

	pull, err := e.is.PullImage(ctx, &runtime.PullImageRequest{Image: spec("hello")})
	if err != nil || pull.ImageRef != img.ID {
		t.Errorf("PullImage(hello) = %v, %v", pull, err)
	}
	_, err = e.is.PullImage(ctx, &runtime.PullImageRequest{Image: spec("x")})
	wantCode(t, err, codes.NotFound, "image \"x\" is not in the node's image store; import it with `skiff image import`")

	fs, err := e.is.ImageFsInfo(ctx, &runtime.ImageFsInfoRequest{})
	if err != nil || len(fs.ImageFilesystems) != 1 || fs.ImageFilesystems[0].UsedBytes.GetValue() < uint64(img.Size) ||
		fs.ImageFilesystems[0].FsId.GetMountpoint() == "" || fs.ImageFilesystems[0].InodesUsed.GetValue() == 0 {
		t.Errorf("ImageFsInfo = %v, %v", fs, err)
	}

	if _, err := e.is.RemoveImage(ctx, &runtime.RemoveImageRequest{Image: spec("hello")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.is.RemoveImage(ctx, &runtime.RemoveImageRequest{Image: spec("hello")}); err != nil {
		t.Errorf("second RemoveImage = %v, want success", err)
	}
	list, _ = e.is.ListImages(ctx, &runtime.ListImagesRequest{})
	if len(list.Images) != 0 {
		t.Errorf("images after remove: %v", list.Images)
	}
}
