package cri

import (
	"context"
	"fmt"
	"os"
	"time"

	"skiff.dev/skiff/netns"
	"skiff.dev/skiff/runtime/image"
	"skiff.dev/skiff/runtime/wasm"
)

// What cri needs of its collaborators, declared here where it is used. All
// implementations must be safe for concurrent use.

// containerRuntime creates containers for a runtime handler: runtime/wasm
// today (through wasmRuntime), runtime/oci later. It knows nothing of pods.
type containerRuntime interface {
	// Create prepares a container (for Wasm: compiles the module); errors
	// wrap wasm.ErrInvalidModule or wasm.ErrInvalidSpec for bad input.
	Create(ctx context.Context, spec wasm.ContainerSpec) (task, error)
	// Forget drops what the runtime keeps of an image's module (its
	// compiled code, on disk and in memory), the image having been removed.
	Forget(imageID string)
	// Close ends every container and releases the runtime.
	Close(ctx context.Context) error
}

// task is one created container. Status is cheap and never blocks on guest
// code; Done is closed once the task has exited.
type task interface {
	Start(ctx context.Context) error
	// Stop asks the task to stop (for Wasm: its stdin reaches end of file)
	// and kills it if it has not exited after grace; grace <= 0 kills at
	// once. It waits for the exit until ctx ends; the kill at the end of
	// grace happens even if ctx ends first. It is idempotent, and a later
	// call with a shorter grace brings the kill forward.
	Stop(ctx context.Context, grace time.Duration) error
	Done() <-chan struct{}
	Status() wasm.Status
	// Stats returns the task's memory and CPU use now; cheap, never blocks
	// on guest code.
	Stats() wasm.Stats
}

// wasmRuntime adapts *wasm.Runtime, whose Create returns the concrete
// *wasm.Container, to containerRuntime.
type wasmRuntime struct{ *wasm.Runtime }

func (r wasmRuntime) Create(ctx context.Context, spec wasm.ContainerSpec) (task, error) {
	c, err := r.Runtime.Create(ctx, spec)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// imageStore is what cri needs of the node's image store (*image.Store).
type imageStore interface {
	Get(ref string) (image.Image, error)
	List() ([]image.Image, error)
	Remove(ref string) error
	BlobPath(img image.Image) string
	Usage() (image.Usage, error)
	Pull(ctx context.Context, ref string, creds image.Credentials) (image.Image, error)
	GC(ctx context.Context, inUse map[string]bool) (image.GCResult, error)
	// Touch marks an image used now (the GC removes the least recently used first).
	Touch(id string) error
}

// namespaces makes and removes pod network namespaces.
type namespaces interface {
	// Create makes and pins a namespace for sandbox id and returns its path.
	Create(id string) (string, error)
	// Delete removes a pin; idempotent.
	Delete(path string) error
	// IsPinned reports whether a namespace is still pinned at path.
	IsPinned(path string) bool
	// List returns the pins that exist, for garbage collection.
	List() ([]string, error)
	// Listen opens a TCP socket listening on port in the namespace at
	// path (the node's when path is empty).
	Listen(path string, port int) (*os.File, error)
}

// hostNamespaces pins namespaces under dir with the netns package.
type hostNamespaces struct{ dir string }

func (h hostNamespaces) Create(id string) (string, error) {
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("%w: running a pod sandbox needs root, because skiff gives every pod its own network namespace; run the node agent as root", errFailedPrecondition)
	}
	return netns.Create(h.dir, id)
}

func (h hostNamespaces) Delete(path string) error { return netns.Delete(path) }

func (h hostNamespaces) IsPinned(path string) bool {
	ok, err := netns.IsPinned(path)
	return ok && err == nil
}

func (h hostNamespaces) List() ([]string, error) { return netns.List(h.dir) }

func (h hostNamespaces) Listen(path string, port int) (*os.File, error) {
	return netns.ListenTCP(path, port)
}
