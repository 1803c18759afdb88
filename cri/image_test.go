package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/runtime/image"
	"skiff.dev/skiff/runtime/image/imagetest"
	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

func spec(ref string) *runtime.ImageSpec { return &runtime.ImageSpec{Image: ref} }

func TestImageService(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	img := e.importImage("hello", wasmtest.Build())

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

	// An imported name without a registry host never reaches a registry.
	pull, err := e.is.PullImage(ctx, &runtime.PullImageRequest{Image: spec("hello")})
	if err != nil || pull.ImageRef != img.ID {
		t.Errorf("PullImage(hello) = %v, %v", pull, err)
	}

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

// TestPullFromRegistry pulls a Wasm artifact and a plain OCI image with a
// .wasm entrypoint from a registry, and runs the OCI one.
func TestPullFromRegistry(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	reg := imagetest.NewRegistry(t)
	module := wasmtest.Build(wasmtest.Write(1, "hello from the registry\n"))
	artifact := reg.Push("wasm/hello:v1", imagetest.WasmArtifact(t, module))
	oci := reg.Push("oci/hello:v1", imagetest.OCIImage(t, map[string][]byte{"hello.wasm": module}, "/hello.wasm"))
	reg.Push("linux/app:v1", imagetest.OCIImage(t, map[string][]byte{"bin/app": []byte("ELF")}, "/bin/app"))

	var ids []string
	for _, ref := range []string{artifact, oci} {
		pull, err := e.is.PullImage(ctx, &runtime.PullImageRequest{Image: spec(ref)})
		if err != nil {
			t.Fatalf("PullImage(%s): %v", ref, err)
		}
		ids = append(ids, pull.ImageRef)
		st, err := e.is.ImageStatus(ctx, &runtime.ImageStatusRequest{Image: spec(ref)})
		if err != nil || st.Image.GetId() != pull.ImageRef || !slices.Contains(st.Image.RepoTags, ref) ||
			!slices.ContainsFunc(st.Image.RepoDigests, func(d string) bool { return strings.HasPrefix(d, strings.TrimSuffix(ref, ":v1")+"@sha256:") }) {
			t.Errorf("ImageStatus(%s) = %v, %v", ref, st, err)
		}
	}
	if ids[0] != ids[1] { // one module, one image with the names of both
		t.Errorf("the same module has two IDs: %v", ids)
	}

	pod := e.runPod("p")
	ctr := e.mustCreate(pod, containerConfig("c", oci))
	e.start(ctr)
	e.waitLog(ctr, "hello from the registry")
	if st := e.waitState(ctr, runtime.ContainerState_CONTAINER_EXITED); st.ExitCode != 0 || st.ImageRef != ids[1] {
		t.Errorf("container status = %v", st)
	}

	_, err := e.is.PullImage(ctx, &runtime.PullImageRequest{Image: spec(reg.Host + "/wasm/hello:nope")})
	wantCode(t, err, codes.NotFound, reg.Host+"/wasm/hello:nope", "image not found")
	_, err = e.is.PullImage(ctx, &runtime.PullImageRequest{Image: spec(reg.Host + "/linux/app:v1")})
	wantCode(t, err, codes.FailedPrecondition, reg.Host+"/linux/app:v1", "not a WebAssembly module", "is not a .wasm file")
	tctx, cancel := context.WithTimeout(ctx, time.Millisecond)
	defer cancel()
	<-tctx.Done()
	_, err = e.is.PullImage(tctx, &runtime.PullImageRequest{Image: spec(reg.Host + "/wasm/hello:v2")})
	wantCode(t, err, codes.DeadlineExceeded)
}

// recordingStore wraps the image store and records what GC is told.
type recordingStore struct {
	*image.Store
	inUse chan map[string]bool
}

func (r recordingStore) GC(ctx context.Context, inUse map[string]bool) (image.GCResult, error) {
	r.inUse <- inUse
	return image.GCResult{}, nil
}

// TestPullRunsGC: after a pull, GC is told every container's image is in use.
func TestPullRunsGC(t *testing.T) {
	e := newEnv(t, false)
	rec := recordingStore{Store: e.images, inUse: make(chan map[string]bool, 1)}
	e.svc.images = rec
	ctx := context.Background()
	used := e.importImage("used", wasmtest.Build(wasmtest.Sleep(time.Hour)))
	e.importImage("unused", wasmtest.Build(wasmtest.Write(1, "x")))
	pod := e.runPod("p")
	e.mustCreate(pod, containerConfig("c", "used"))

	reg := imagetest.NewRegistry(t)
	ref := reg.Push("app:v1", imagetest.WasmArtifact(t, wasmtest.Build()))
	if _, err := e.is.PullImage(ctx, &runtime.PullImageRequest{Image: spec(ref)}); err != nil {
		t.Fatal(err)
	}
	inUse := <-rec.inUse
	if len(inUse) != 1 || !inUse[used.ID] {
		t.Errorf("GC was told %v are in use, want only %s", inUse, used.ID)
	}
}

// gcCounter is the node's image store with a GC that counts its runs and
// reports removed the images named in removed.
type gcCounter struct {
	imageStore
	runs    atomic.Int32
	removed []string
}

func (g *gcCounter) GC(ctx context.Context, inUse map[string]bool) (image.GCResult, error) {
	g.runs.Add(1)
	return image.GCResult{Removed: g.removed}, nil
}

// TestPeriodicImageGC: the server runs the image GC on its interval, and
// the compiled code of every image the GC removes leaves the node.
func TestPeriodicImageGC(t *testing.T) {
	e := newEnv(t, false)
	img := e.importImage("gone", wasmtest.Build(wasmtest.Write(1, "periodic gc\n")))
	pod := e.runPod("gc")
	id := e.mustCreate(pod, containerConfig("gone", "gone")) // compiles: a file in the cache
	if _, err := e.rs.RemoveContainer(context.Background(), &runtime.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	index := func() string {
		b, _ := os.ReadFile(filepath.Join(cacheDir, "skiff-modules.json"))
		return string(b)
	}
	if !strings.Contains(index(), img.ID) {
		t.Fatalf("the compiled module of %s is not in the disk cache's index: %s", img.ID, index())
	}
	counter := &gcCounter{imageStore: e.svc.images, removed: []string{img.ID}}
	e.svc.images = counter
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&Server{svc: e.svc}).collectImages(ctx, 10*time.Millisecond)
	}()
	defer func() { cancel(); <-done }()
	wasmtest.Eventually(t, 10*time.Second, func() bool { return counter.runs.Load() >= 2 },
		func() string { return fmt.Sprintf("the image GC ran %d times, want 2", counter.runs.Load()) })
	if strings.Contains(index(), img.ID) {
		t.Errorf("the compiled module of the collected image %s is still in the disk cache: %s", img.ID, index())
	}
}
