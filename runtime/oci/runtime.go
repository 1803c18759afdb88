// Package oci runs OCI containers with runc: it turns a runtime.ContainerSpec
// into an OCI bundle (an overlayfs rootfs over the image's layers and a
// config.json), drives the runc binary to create, start, exec in and delete
// the container, and watches the container's init process itself.
//
// The node process makes itself a child subreaper, so that a container's
// init, once `runc create` has exited, is its child: it reaps the init and
// learns its exit status (kept in the bundle, for a later process). The
// containers outlive the node process; the next one adopts them (Adopt).
// Output goes through FIFOs in the bundle, which the container holds open
// for reading and writing, so that it never meets a broken pipe while no
// node process reads.
//
// It does not own the image's layers (runtime/image does) nor the network
// namespace a container joins (netns and the CRI server do).
package oci

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	skiffrt "skiff.dev/skiff/runtime"

	"golang.org/x/sys/unix"
)

// Config configures a Runtime.
type Config struct {
	// Root holds the runtime's state: runc's (<Root>/runc) and the bundles
	// (<Root>/bundles/<id>). Required.
	Root string
	// Runc is the runc binary; empty: "runc" looked up in PATH.
	Runc string
	// CgroupParent is the cgroup under which each container gets
	// <CgroupParent>/<id>; empty: "skiff".
	CgroupParent string
	// Log receives the runtime's logs; nil: discarded.
	Log *slog.Logger
	// CallTimeout bounds each call of runc; zero: 30s.
	CallTimeout time.Duration
}

// Runtime runs OCI containers with runc. It implements runtime.Runtime and
// runtime.Adopter; its containers implement runtime.Container and
// runtime.Execer. It is safe for concurrent use.
type Runtime struct {
	runc         string
	root         string // Config.Root
	runcRoot     string // <root>/runc
	bundles      string // <root>/bundles
	cgroupParent string
	callTimeout  time.Duration
	log          *slog.Logger
	cgroups      cgroupFS
	minOOMScore  int    // the node process's own oom_score_adj
	capBnd       uint64 // the node process's capability bounding set
	reaper       *reaper

	mu         sync.Mutex
	closed     bool
	containers map[string]*Container
}

var (
	_ skiffrt.Adopter   = (*Runtime)(nil)
	_ skiffrt.Container = (*Container)(nil)
	_ skiffrt.Execer    = (*Container)(nil)
)

// New makes a Runtime: it checks runc, makes the state directories and
// makes the process a child subreaper (containers' inits, once runc has
// exited, are its children).
func New(cfg Config) (*Runtime, error) {
	if cfg.Root == "" || !filepath.IsAbs(cfg.Root) {
		return nil, fmt.Errorf("new oci runtime: Root %q must be an absolute path", cfg.Root)
	}
	runc := cfg.Runc
	if runc == "" {
		p, err := exec.LookPath("runc")
		if err != nil {
			return nil, fmt.Errorf("new oci runtime: runc not found in PATH (install the Debian package \"runc\"): %w", err)
		}
		runc = p
	} else if _, err := exec.LookPath(runc); err != nil {
		return nil, fmt.Errorf("new oci runtime: runc %q: %w", runc, err)
	}
	r := &Runtime{
		runc:         runc,
		root:         filepath.Clean(cfg.Root),
		cgroupParent: cfg.CgroupParent,
		callTimeout:  cfg.CallTimeout,
		log:          cfg.Log,
		containers:   map[string]*Container{},
	}
	if r.cgroupParent == "" {
		r.cgroupParent = "skiff"
	}
	if err := validCgroupParent(r.cgroupParent); err != nil {
		return nil, fmt.Errorf("new oci runtime: %w", err)
	}
	if r.callTimeout <= 0 {
		r.callTimeout = 30 * time.Second
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.runcRoot = filepath.Join(r.root, "runc")
	r.bundles = filepath.Join(r.root, "bundles")
	for _, dir := range []string{r.runcRoot, r.bundles} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("new oci runtime: %w", err)
		}
	}
	cg, err := detectCgroups()
	if err != nil {
		return nil, fmt.Errorf("new oci runtime: %w", err)
	}
	r.cgroups = cg
	r.minOOMScore, err = ownOOMScoreAdj()
	if err != nil {
		return nil, fmt.Errorf("new oci runtime: %w", err)
	}
	r.capBnd, err = ownCapBnd()
	if err != nil {
		return nil, fmt.Errorf("new oci runtime: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("new oci runtime: become a child subreaper: %w", err)
	}
	r.reaper = startReaper(r.log)
	return r, nil
}

// Forget does nothing: the layers belong to the image store.
func (r *Runtime) Forget(string) {}

// Close stops watching the containers and copying their output; they keep
// running, for the next process to adopt. Their Done channels stay open.
func (r *Runtime) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	cs := make([]*Container, 0, len(r.containers))
	for _, c := range r.containers {
		cs = append(cs, c)
	}
	r.mu.Unlock()
	for _, c := range cs {
		c.detach()
	}
	var errs []error
	for _, c := range cs {
		select {
		case <-c.watcherDone:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("close oci runtime: container %s: %w", c.id, ctx.Err()))
		}
	}
	r.reaper.stop()
	return errors.Join(errs...)
}

// track registers c; false if the runtime is closed or the ID is taken.
func (r *Runtime) track(c *Container) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return skiffrt.ErrClosed
	}
	if _, ok := r.containers[c.id]; ok {
		return fmt.Errorf("%w: container %s exists", skiffrt.ErrState, c.id)
	}
	r.containers[c.id] = c
	return nil
}

func (r *Runtime) untrack(c *Container) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.containers[c.id] == c {
		delete(r.containers, c.id)
	}
}

func (r *Runtime) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

func (r *Runtime) bundle(id string) string { return filepath.Join(r.bundles, id) }
