package cri

import (
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffrt "skiff.dev/skiff/runtime"
	"skiff.dev/skiff/runtime/image"
)

// fakeImageStore answers Get and Layers from a map of images; the other
// methods are not called.
type fakeImageStore struct {
	imageStore
	images map[string]image.Image // by name and by ID
	layers map[string][]string    // by ID
}

func (f *fakeImageStore) Get(ref string) (image.Image, error) {
	img, ok := f.images[ref]
	if !ok {
		return image.Image{}, image.ErrNotFound
	}
	return img, nil
}

func (f *fakeImageStore) Layers(img image.Image) ([]string, error) {
	l, ok := f.layers[img.ID]
	if !ok {
		return nil, image.ErrNotFound
	}
	return l, nil
}

func TestImageMountChecks(t *testing.T) {
	img := &runtime.ImageSpec{Image: "busybox:1.36"}
	for _, tc := range []struct {
		name    string
		m       *runtime.Mount
		oci     bool
		wantErr error
		parts   []string
	}{
		{"whole image", &runtime.Mount{ContainerPath: "/v", Readonly: true, Image: img}, true, nil, nil},
		{"sub path", &runtime.Mount{ContainerPath: "/v", Readonly: true, Image: img, ImageSubPath: "etc/ssl"}, true, nil, nil},
		{"Wasm", &runtime.Mount{ContainerPath: "/v", Readonly: true, Image: img}, false, errInvalidArgument,
			[]string{"config.mounts[0].image", "not supported by the Wasm runtime"}},
		{"writable", &runtime.Mount{ContainerPath: "/v", Image: img}, true, errInvalidArgument,
			[]string{"config.mounts[0].readonly", "read-only"}},
		{"host path too", &runtime.Mount{ContainerPath: "/v", HostPath: "/tmp", Readonly: true, Image: img}, true, errInvalidArgument,
			[]string{"config.mounts[0].host_path", `"/tmp"`}},
		{"sub path without image", &runtime.Mount{ContainerPath: "/v", Readonly: true, ImageSubPath: "etc"}, true, errInvalidArgument,
			[]string{"config.mounts[0].image.image", "required"}},
		{"dot dot", &runtime.Mount{ContainerPath: "/v", Readonly: true, Image: img, ImageSubPath: "etc/../../x"}, true, errInvalidArgument,
			[]string{"config.mounts[0].image_sub_path", `".."`}},
		{"absolute sub path", &runtime.Mount{ContainerPath: "/v", Readonly: true, Image: img, ImageSubPath: "/etc"}, true, errInvalidArgument,
			[]string{"config.mounts[0].image_sub_path", "relative"}},
		{"unclean sub path", &runtime.Mount{ContainerPath: "/v", Readonly: true, Image: img, ImageSubPath: "etc//ssl/"}, true, errInvalidArgument,
			[]string{"config.mounts[0].image_sub_path", `"etc/ssl"`}},
		{"propagation", &runtime.Mount{ContainerPath: "/v", Readonly: true, Image: img,
			Propagation: runtime.MountPropagation_PROPAGATION_HOST_TO_CONTAINER}, true, errInvalidArgument,
			[]string{"config.mounts[0].propagation", "private"}},
		{"relative container path", &runtime.Mount{ContainerPath: "v", Readonly: true, Image: img}, true, errInvalidArgument,
			[]string{"config.mounts[0].container_path"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := mountsOf([]*runtime.Mount{tc.m}, tc.oci, false)
			if tc.wantErr == nil {
				want := []mountRecord{{ContainerPath: "/v", ReadOnly: true, Image: "busybox:1.36", ImageSubPath: tc.m.GetImageSubPath()}}
				if err != nil || !slices.Equal(ms, want) {
					t.Fatalf("mountsOf = %+v, %v; want %+v", ms, err, want)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("mountsOf = %+v, %v; want %v", ms, err, tc.wantErr)
			}
			for _, p := range tc.parts {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("error %q does not say %q", err, p)
				}
			}
		})
	}
}

func TestResolveImageMounts(t *testing.T) {
	oci := image.Image{ID: "sha256:bb", Names: []string{"busybox:1.36"}, MediaType: image.MediaTypeOCI}
	wasm := image.Image{ID: "sha256:aa", Names: []string{"hello:1"}, MediaType: image.MediaTypeWasm}
	store := &fakeImageStore{
		images: map[string]image.Image{"busybox:1.36": oci, oci.ID: oci, "hello:1": wasm, wasm.ID: wasm},
		layers: map[string][]string{oci.ID: {"/snap/1", "/snap/2"}},
	}
	host := mountRecord{ContainerPath: "/h", HostPath: "/tmp"}
	ms := []mountRecord{host, {ContainerPath: "/v", ReadOnly: true, Image: "busybox:1.36", ImageSubPath: "etc"}}
	if err := resolveImageMounts(store, ms); err != nil {
		t.Fatal(err)
	}
	if ms[1].ImageID != oci.ID || ms[0] != host {
		t.Errorf("resolved mounts %+v; want the image volume's ImageID %s, the host mount untouched", ms, oci.ID)
	}

	err := resolveImageMounts(store, []mountRecord{host, {ContainerPath: "/v", ReadOnly: true, Image: "missing:1"}})
	if !errors.Is(err, errNotFound) || !strings.Contains(err.Error(), "config.mounts[1].image.image") || !strings.Contains(err.Error(), `"missing:1"`) {
		t.Errorf("an image not in the store: %v; want NotFound naming config.mounts[1].image.image and the image", err)
	}
	if code := status.Code(toStatus(err)); code != codes.NotFound {
		t.Errorf("an image not in the store: code %v, want NotFound", code)
	}
	err = resolveImageMounts(store, []mountRecord{{ContainerPath: "/v", ReadOnly: true, Image: "hello:1"}})
	if !errors.Is(err, errInvalidArgument) || !strings.Contains(err.Error(), "WebAssembly module") {
		t.Errorf("a Wasm image: %v; want InvalidArgument saying it is a WebAssembly module", err)
	}

	// What the runtime is given, and what ContainerStatus reports.
	s := &service{images: store, log: slog.New(slog.DiscardHandler)}
	ims, err := s.imageMounts(ms)
	want := []skiffrt.ImageMount{{Layers: []string{"/snap/1", "/snap/2"}, SubPath: "etc", ContainerPath: "/v"}}
	if err != nil || len(ims) != 1 || !slices.Equal(ims[0].Layers, want[0].Layers) || ims[0].SubPath != "etc" || ims[0].ContainerPath != "/v" {
		t.Errorf("imageMounts = %+v, %v; want %+v", ims, err, want)
	}
	if rms := runtimeMounts(ms); len(rms) != 1 || rms[0].HostPath != "/tmp" {
		t.Errorf("runtimeMounts = %+v; want the host mount only", rms)
	}
	cms := criMounts(ms)
	if len(cms) != 2 || cms[1].GetImage().GetImage() != "busybox:1.36" || cms[1].GetImage().GetImageRef() != oci.ID ||
		cms[1].GetImageSubPath() != "etc" || !cms[1].GetReadonly() || cms[1].GetHostPath() != "" || cms[0].GetImage() != nil {
		t.Errorf("ContainerStatus mounts = %v; want the image volume with image busybox:1.36, image_ref %s, image_sub_path etc", cms, oci.ID)
	}
}

// TestImageMountRecord: an image volume survives in the container's
// record, so that status and a restart after a node restart still see it.
func TestImageMountRecord(t *testing.T) {
	db, err := openStateDB(filepath.Join(t.TempDir(), "cri.db"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	m := mountRecord{ContainerPath: "/v", ReadOnly: true, Image: "busybox:1.36", ImageID: "sha256:bb", ImageSubPath: "etc"}
	if err := db.putContainer(&containerRecord{ID: "c1", SandboxID: "sb", Name: "c", Mounts: []mountRecord{m}}); err != nil {
		t.Fatal(err)
	}
	_, cs, err := db.load()
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || len(cs[0].Mounts) != 1 || cs[0].Mounts[0] != m {
		t.Errorf("loaded containers %+v; want one with mount %+v", cs, m)
	}
}
