// Package netns creates, pins, enters and deletes pod network namespaces.
//
// Every pod gets one network namespace (the pause container's job in other
// runtimes), pinned by bind-mounting it onto a file under a directory the
// caller owns (for example /run/skiff/netns/<sandbox-id>), so that it lives
// as long as the pin and not as long as some process. Create brings the
// loopback interface up; nothing else is configured here.
//
// Attaching a namespace to the node's network (interfaces, addresses,
// routes) is the job of a Network, called by cri after Create and before
// Delete: Loopback (nothing beyond loopback) or CNI (cni.go: the plugins
// of a conflist, the user's or skiff's own bridge from the node's pod
// CIDR, through libcni).
//
// Pools keep a few namespaces made ahead of need, off a pod's critical
// path: Pool plain ones (loopback up), CNIPool ones already attached to
// skiff's own CNI network under CNI IDs of their own, which the caller
// must then tear the pod's network down with.
//
// Threads: entering a namespace is per OS thread. Nothing in this package
// moves the calling goroutine's thread; Do runs its function on a fresh
// goroutine locked to its thread, and a thread that cannot be moved back is
// never returned to the Go scheduler (it ends with its goroutine).
//
// Everything here needs CAP_SYS_ADMIN (root).
package netns

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrExist: a namespace (or a leftover file) is already pinned at that path.
var ErrExist = errors.New("network namespace already exists")

// nsfsMagic is the statfs type of a namespace file (NSFS_MAGIC).
const nsfsMagic = 0x6e736673

// Create creates a network namespace, pins it at dir/name, brings its
// loopback interface up and returns the pin's path. On error nothing is
// left behind.
func Create(dir, name string) (string, error) {
	f, err := newNamespace()
	if err != nil {
		return "", fmt.Errorf("create network namespace %q: %w", name, err)
	}
	defer f.Close() // the pin holds the namespace now, or nothing does
	return pinFile(f, dir, name)
}

// newPinFile makes the empty file dir/name a namespace will be bind-mounted
// on; a name in use is ErrExist.
func newPinFile(dir, name string) (string, error) {
	if err := validName(name); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create network namespace %q: %w", name, err)
	}
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("create network namespace %s: %w", path, ErrExist)
	}
	if err != nil {
		return "", fmt.Errorf("create network namespace %s: %w", path, err)
	}
	f.Close()
	return path, nil
}

// validName refuses a name that is not one file name.
func validName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return fmt.Errorf("create network namespace %q: invalid name", name)
	}
	return nil
}

// newNamespace creates a network namespace on a locked thread of its own,
// brings its loopback up while there, opens it, and moves the thread back;
// the file returned holds the namespace (pinned nowhere) until closed. A
// thread that cannot be moved back stays locked, so Go ends it with the
// goroutine instead of reusing it. (Restoring matters even so: when the
// goroutine happens to run on the main thread, Go cannot end that thread,
// only park it forever, and it would hold the namespace alive.)
func newNamespace() (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			res <- result{err: fmt.Errorf("get current network namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread() // unshare failed: the thread did not move
			res <- result{err: fmt.Errorf("unshare: %w", err)}
			return
		}
		f, openErr := os.Open(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()))
		if openErr == nil {
			if openErr = loopbackUp(); openErr != nil {
				f.Close()
			}
		}
		if err := vnetns.Set(orig); err != nil {
			if openErr == nil {
				f.Close()
			}
			res <- result{err: errors.Join(openErr, fmt.Errorf("return to the original network namespace: %w", err))}
			return // still locked: the thread ends with this goroutine
		}
		runtime.UnlockOSThread()
		if openErr != nil {
			res <- result{err: openErr}
			return
		}
		res <- result{f: f}
	}()
	r := <-res
	return r.f, r.err
}

// loopbackUp brings up the loopback interface of the calling thread's
// network namespace, with two ioctls on one socket (as ip link set lo up
// does, less its netlink round trips: a namespace is made for every pod).
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring loopback up: socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bring loopback up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("find loopback: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring loopback up: %w", err)
	}
	return nil
}

// Delete unmounts the namespace pinned at path and removes the pin. The
// namespace itself goes away when nothing else holds it. Delete is
// idempotent: a path that is not there is not an error.
func Delete(path string) error {
	for range 8 { // a pin mounted twice needs two unmounts
		err := unix.Unmount(path, unix.MNT_DETACH)
		if err == unix.EINVAL || err == unix.ENOENT {
			break // not a mount point (any more), or no such file
		}
		if err != nil {
			return fmt.Errorf("delete network namespace %s: unmount: %w", path, err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete network namespace %s: %w", path, err)
	}
	return nil
}

// List returns the paths of the files under dir, sorted: the pinned
// namespaces and any leftover file of an interrupted Create, which Delete
// also removes. A missing dir gives an empty list.
func List(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list network namespaces in %s: %w", dir, err)
	}
	var paths []string
	for _, e := range entries {
		if !e.IsDir() {
			paths = append(paths, filepath.Join(dir, e.Name()))
		}
	}
	slices.Sort(paths)
	return paths, nil
}

// IsPinned reports whether a namespace is mounted at path.
func IsPinned(path string) (bool, error) {
	var st unix.Statfs_t
	err := unix.Statfs(path, &st)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat network namespace %s: %w", path, err)
	}
	return st.Type == nsfsMagic, nil
}

// Do runs fn inside the network namespace pinned at path, on a goroutine of
// its own locked to its OS thread, and returns fn's error. Goroutines that
// fn starts do not run in the namespace. A panic in fn is returned as an
// error. The calling goroutine's thread never changes namespace.
func Do(path string, fn func() error) error {
	target, err := vnetns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("enter network namespace %s: %w", path, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: get current: %w", path, err)
			return
		}
		defer orig.Close()
		if err := vnetns.Set(target); err != nil {
			runtime.UnlockOSThread() // setns failed: the thread did not move
			errc <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		fnErr := call(fn)
		if err := vnetns.Set(orig); err != nil {
			// The thread stays locked, so it ends with this goroutine.
			errc <- errors.Join(fnErr, fmt.Errorf("leave network namespace %s: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}

func call(fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in network namespace: %v", p)
		}
	}()
	return fn()
}

// Network attaches pod namespaces to the node's network. Implementations
// must be safe for concurrent use; Setup and Teardown for one pod are never
// called concurrently.
type Network interface {
	// Setup attaches the namespace at nsPath to the network and returns the
	// pod's addresses.
	Setup(ctx context.Context, podID, nsPath string) (Result, error)
	// Teardown undoes Setup. It is idempotent.
	Teardown(ctx context.Context, podID, nsPath string) error
	// Ready reports whether pods can be networked, with a reason when not.
	Ready() (bool, string)
}

// Result is what Setup gives a pod.
type Result struct {
	IPs []string // pod IPs, primary first; empty for loopback-only pods
}

// Loopback is the Network of a node without CNI: pods get their own
// namespace with loopback only, so containers of one pod reach each other on
// 127.0.0.1 and nothing else.
type Loopback struct{}

// Setup does nothing: Create already brought loopback up.
func (Loopback) Setup(context.Context, string, string) (Result, error) { return Result{}, nil }

// Teardown does nothing.
func (Loopback) Teardown(context.Context, string, string) error { return nil }

// Ready is always true.
func (Loopback) Ready() (bool, string) { return true, "" }
