package cri

import (
	"context"
	"fmt"
	"os"

	"skiff.dev/skiff/netns"
	skiffrt "skiff.dev/skiff/runtime"
	"skiff.dev/skiff/runtime/image"
)

// What cri needs of its collaborators, declared here where it is used. All
// implementations must be safe for concurrent use.

// A task is one created container, as the runtimes make it
// (runtime.Container): containerd's word.
type task = skiffrt.Container

// imageStore is what cri needs of the node's image store (*image.Store).
type imageStore interface {
	Get(ref string) (image.Image, error)
	List() ([]image.Image, error)
	Remove(ref string) error
	BlobPath(img image.Image) string
	// Layers are the unpacked layer directories of an OCI image, lowest
	// first.
	Layers(img image.Image) ([]string, error)
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

// attachedNamespaces hands out namespaces already attached to the pod
// network under CNI container IDs of their own (netns.CNIPool), so that
// RunPodSandbox does not wait for CNI ADD.
type attachedNamespaces interface {
	// Take pins a spare at the namespaces' dir/name; false: none ready
	// (the caller makes and attaches one itself). The spare's CNI ID is
	// claimed under name until Release: cri releases it when it deletes
	// the pin, so that an orphaned pin's ID is always found.
	Take(name string) (netns.Attached, bool, error)
	// Claimed is the CNI ID claimed under name; "" when none.
	Claimed(name string) string
	// Release drops the claim under name; idempotent.
	Release(name string) error
}

// podCIDRSetter is a Network that takes the node's pod CIDR from
// UpdateRuntimeConfig (netns.CNI); a Network without it (netns.Loopback)
// has no use for one.
type podCIDRSetter interface {
	// SetPodCIDR gives the network the node's pod CIDR(s), comma
	// separated; an error names what is wrong with it.
	SetPodCIDR(cidr string) error
}

// hostNamespaces pins namespaces under dir with the netns package, taking
// them from pool when there is one.
type hostNamespaces struct {
	dir  string
	pool *netns.Pool
}

func (h hostNamespaces) Create(id string) (string, error) {
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("%w: running a pod sandbox needs root, because skiff gives every pod its own network namespace; run the node agent as root", errFailedPrecondition)
	}
	if h.pool != nil {
		return h.pool.Take(id)
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
