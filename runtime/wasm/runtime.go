// Package wasm runs WebAssembly containers in process with wazero, as WASI
// preview1 command modules.
//
// A Runtime compiles each module once: compiled modules are kept in memory by
// ContainerSpec.ImageID (the image ID) and, across process restarts, in
// wazero's on-disk compilation cache (Config.CacheDir). Every container gets a
// fresh module instance (microseconds to make) with its own argv, environment,
// stdout and stderr; containers never share memory.
//
// What a container can reach: its args, env, stdout and stderr, the wall and
// monotonic clocks, sleep, random bytes, and a stdin that carries no data
// (below). It has no filesystem (path_open fails with ENOSYS) but the host
// directories its spec mounts (ContainerSpec.Mounts: WASI preopens, confined
// to their trees, read-only where asked; see Mount), and the listening
// sockets of its declared ports (ContainerSpec.Ports, sockets.go), on
// which it accepts connections; it cannot open sockets of its own.
//
// # Graceful stop
//
// WASI preview1 has no signals, so stdin stands in for SIGTERM: it stays
// open with no data while the container runs, and reaches end of file when
// a graceful stop is asked (Container.Stop with a grace period). A module
// that wants to clean up reads stdin until end of file, then returns. In Go:
//
//	go func() { io.Copy(io.Discard, os.Stdin); cancel() }()
//
// The Go guest keeps running while that goroutine waits: stdin is an OS
// pipe, which wazero lets the guest put in non-blocking mode (Go's wasip1
// syscall package does it at init) and wait for in poll_oneoff, next to its
// timers, so the wait parks one goroutine, not the module. A module whose
// stdin reads block (wasi-libc's and Rust's default) stops all its work
// while it reads; such a module waits for stdin with an fd_read
// subscription of poll_oneoff instead, or reads it only when it has nothing
// else to do. Unlike a Kubernetes container without stdin, a module that
// reads all of stdin at start waits until it is stopped. A kill ends stdin
// too, so a module waiting for it wakes, only to be closed. Each running
// container holds the two descriptors of its pipe.
//
// # Exit semantics
//
//   - proc_exit(n), or returning from _start (n = 0): exit code n; reason
//     "Completed" when n is 0, "Error" otherwise.
//
//   - A trap (unreachable, out-of-bounds access, stack overflow, ...): exit
//     code 134 (as SIGABRT would give), reason "Error", message the trap text.
//
//   - A kill (Stop with no grace period, or at the end of it): exit code
//     137 (as SIGKILL would give), reason "Error", message "stopped" ("stopped:
//     did not exit within the 30s grace period" at the end of one, "runtime
//     closed" when Runtime.Close ended it). A module that returns within the
//     grace period of a Stop keeps its own exit code and reason.
//
//   - A failure to instantiate at Start (a missing import's signature, a
//     failing Wasm start section): exit code 128, reason "StartError".
//
//   - A memory limit met (ContainerSpec.MemoryLimit): memory.grow past it
//     fails in the guest; a module that then ends other than with exit
//     code 0 (a Go guest dies "out of memory", C code traps) gets exit code
//     137, reason "OOMKilled", a message naming the limit.
//
//   - A CPU budget used up (ContainerSpec.CPUBudget): killed, exit code
//     137, reason "CPUBudgetExceeded".
//
// # Resources
//
// Each container's linear memory is an anonymous mapping of its limit
// (default 512 MiB, Config.DefaultMemoryLimit), committed only as the guest
// touches pages and unmapped as soon as the container ends. Guest code runs
// on an OS thread locked to it while the container runs, so the thread's
// CPU time (CLOCK_THREAD_CPUTIME_ID) is the container's CPU time: guest
// code and the host functions it calls. Container.Stats reads both. A CPU
// limit (throttling to a fraction of a core) is not enforced: the guest
// runs until it returns to the host, and Go gives no way to pause one
// goroutine's thread from outside it.
//
// On disk, wazero's compilation cache is bounded too (Config.DiskCacheBytes,
// default 1 GiB, oldest out first), and a module's compiled code leaves it
// when its image leaves the node (Runtime.Forget; diskcache.go).
//
// Compiled modules are cached in memory by ImageID up to
// Config.ModuleCacheBytes (default 256 MiB, sized by an estimate of
// compiled code: 13 times the binary), least recently used first out;
// modules of Created or Running containers are pinned, and an evicted
// module is closed so that its code is released.
//
// Guest code runs on its own goroutine; a trap or a panic inside wazero or a
// host function ends that container only, never the process.
package wasm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	skiffrt "skiff.dev/skiff/runtime"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// Errors returned by the runtime, wrapped with the operation and the
// container: runtime's.
var (
	// ErrInvalidModule: the module does not compile, or is not a WASI
	// preview1 command (no _start, or imports the runtime does not
	// provide). It is a runtime.ErrInvalidImage.
	ErrInvalidModule error = invalidModule{}
	ErrInvalidSpec         = skiffrt.ErrInvalidSpec
	ErrState               = skiffrt.ErrState
	ErrClosed              = skiffrt.ErrClosed
)

type invalidModule struct{}

func (invalidModule) Error() string        { return "invalid WebAssembly module" }
func (invalidModule) Is(target error) bool { return target == skiffrt.ErrInvalidImage }

// wasiModule is the only import module the runtime provides.
const wasiModule = wasi_snapshot_preview1.ModuleName

// Config configures a Runtime.
type Config struct {
	// CacheDir holds wazero's compilation cache, so a module compiled once is
	// not compiled again after a restart. Empty: in-memory only.
	CacheDir string
	// DefaultMemoryLimit caps the linear memory of a container whose spec
	// sets no MemoryLimit. Zero: DefaultMemoryLimit (512 MiB).
	DefaultMemoryLimit uint64
	// ModuleCacheBytes bounds the compiled modules kept in memory (an
	// estimate of their size). Modules of Created or Running containers
	// are kept whatever the bound. Zero: DefaultModuleCacheBytes (256 MiB).
	ModuleCacheBytes int64
	// DiskCacheBytes bounds CacheDir: past it, the oldest compiled
	// modules are removed from disk. Zero: DefaultDiskCacheBytes (1 GiB).
	DiskCacheBytes int64
	// Logger receives container lifecycle logs. Nil: discard.
	Logger *slog.Logger
}

// Runtime compiles and runs WebAssembly containers. It is safe for concurrent use.
type Runtime struct {
	rt       wazero.Runtime
	cache    wazero.CompilationCache
	log      *slog.Logger
	wasi     map[string]bool // names of the functions wasi_snapshot_preview1 exports
	memLimit uint64

	disk   *diskCache  // nil without a CacheDir
	cpu    *cpuCgroups // nil where threads cannot be limited
	cpuErr error       // why not

	mu      sync.Mutex
	closed  bool
	modules *moduleCache // by ImageID
	running map[*Container]struct{}
}

// New returns a runtime with WASI preview1 instantiated.
func New(ctx context.Context, cfg Config) (*Runtime, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rc := wazero.NewRuntimeConfig().WithCloseOnContextDone(true)
	var cache wazero.CompilationCache
	if cfg.CacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("open compilation cache %s: %w", cfg.CacheDir, err)
		}
		cache = c
		rc = rc.WithCompilationCache(cache)
	}
	rt := wazero.NewRuntimeWithConfig(ctx, rc)
	if err := instantiateWASI(ctx, rt); err != nil {
		rt.Close(ctx)
		return nil, fmt.Errorf("instantiate %s: %w", wasiModule, err)
	}
	exports := map[string]bool{}
	for name := range rt.Module(wasiModule).ExportedFunctionDefinitions() {
		exports[name] = true
	}
	if cfg.DefaultMemoryLimit == 0 {
		cfg.DefaultMemoryLimit = DefaultMemoryLimit
	}
	if cfg.ModuleCacheBytes == 0 {
		cfg.ModuleCacheBytes = DefaultModuleCacheBytes
	}
	if cfg.DiskCacheBytes == 0 {
		cfg.DiskCacheBytes = DefaultDiskCacheBytes
	}
	cpu, cpuErr := findCPUCgroups()
	var disk *diskCache
	if cfg.CacheDir != "" {
		disk = newDiskCache(cfg.CacheDir, cfg.DiskCacheBytes)
	}
	return &Runtime{
		rt:       rt,
		cache:    cache,
		log:      log,
		wasi:     exports,
		memLimit: cfg.DefaultMemoryLimit,
		modules:  newModuleCache(cfg.ModuleCacheBytes),
		disk:     disk,
		cpu:      cpu,
		cpuErr:   cpuErr,
		running:  map[*Container]struct{}{},
	}, nil
}

// Close stops every running container (exit code 137, message "runtime
// closed"), waits for them until ctx ends, and releases the compiled modules
// and the wazero runtime. Containers cannot be created or started afterwards.
func (r *Runtime) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	running := make([]*Container, 0, len(r.running))
	for c := range r.running {
		running = append(running, c)
	}
	r.mu.Unlock()

	var errs []error
	for _, c := range running {
		if err := c.stop(ctx, 0, "runtime closed"); err != nil {
			errs = append(errs, err)
		}
	}
	if err := r.rt.Close(ctx); err != nil {
		errs = append(errs, fmt.Errorf("close wazero runtime: %w", err))
	}
	if r.cache != nil {
		if err := r.cache.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close compilation cache: %w", err))
		}
	}
	if r.cpu != nil {
		os.Remove(r.cpu.root) // the parent of the containers' cgroups, unless another runtime uses it
	}
	return errors.Join(errs...)
}

// ContainerSpec describes one container.

// Create compiles the module (or reuses the compiled module for
// spec.ImageID) and returns a container in state Created. An invalid
// module gives an error wrapping ErrInvalidModule with wazero's reason.
// The compiled module stays in memory at least until the container has
// exited.
func (r *Runtime) Create(ctx context.Context, spec ContainerSpec) (*Container, error) {
	if err := checkSpec(spec); err != nil {
		return nil, fmt.Errorf("create container %s: %w", spec.ID, err)
	}
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("create container %s: %w", spec.ID, ErrClosed)
	}
	e, err := r.compile(ctx, spec.ImageID, spec.ImagePath)
	if err != nil {
		return nil, fmt.Errorf("create container %s: %w", spec.ID, err)
	}
	if spec.MemoryLimit == 0 {
		spec.MemoryLimit = r.memLimit
	}
	return newContainer(r, spec, e), nil
}

func checkSpec(spec ContainerSpec) error {
	if len(spec.Args) == 0 {
		return fmt.Errorf("%w: argv is empty (argv[0] is the program name)", ErrInvalidSpec)
	}
	if spec.CPUQuota < 0 || (spec.CPUQuota > 0 && spec.CPUQuota < time.Millisecond) {
		return fmt.Errorf("%w: CPU quota %v is under the kernel's 1ms", ErrInvalidSpec, spec.CPUQuota)
	}
	if spec.CPUPeriod != 0 && (spec.CPUPeriod < time.Millisecond || spec.CPUPeriod > time.Second) {
		return fmt.Errorf("%w: CPU period %v is not between 1ms and 1s", ErrInvalidSpec, spec.CPUPeriod)
	}
	if len(spec.Ports) > 0 && spec.Listen == nil {
		return fmt.Errorf("%w: ports without a Listen function", ErrInvalidSpec)
	}
	seen := map[int]bool{}
	for _, p := range spec.Ports {
		if p < 1 || p > 65535 {
			return fmt.Errorf("%w: port %d is not a port number", ErrInvalidSpec, p)
		}
		if seen[p] {
			return fmt.Errorf("%w: port %d appears twice", ErrInvalidSpec, p)
		}
		seen[p] = true
	}
	for i, a := range spec.Args {
		if a == "" || strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("%w: argument %d is empty or holds a NUL byte", ErrInvalidSpec, i)
		}
	}
	for _, e := range spec.Env {
		k, _, ok := strings.Cut(e, "=")
		if !ok || k == "" || strings.IndexByte(e, 0) >= 0 {
			return fmt.Errorf("%w: environment entry %q is not KEY=VALUE", ErrInvalidSpec, e)
		}
	}
	// What only an OCI container has is refused, never ignored.
	switch {
	case spec.Privileged:
		return fmt.Errorf("%w: privileged: a Wasm module has no privileges to be given", ErrInvalidSpec)
	case spec.HostPID || spec.HostIPC:
		return fmt.Errorf("%w: hostPID, hostIPC: a Wasm module has no processes or IPC of its own", ErrInvalidSpec)
	case len(spec.Sysctls) > 0:
		return fmt.Errorf("%w: sysctls: not supported by the Wasm runtime", ErrInvalidSpec)
	case spec.MaskedPaths != nil || spec.ReadonlyPaths != nil:
		return fmt.Errorf("%w: maskedPaths, readonlyPaths: a Wasm module sees only its mounts", ErrInvalidSpec)
	case spec.Seccomp == skiffrt.SeccompLocalhost:
		return fmt.Errorf("%w: seccomp: a Wasm module makes no system calls to filter", ErrInvalidSpec)
	case len(spec.ImageMounts) > 0:
		return fmt.Errorf("%w: imageMounts: image volumes are not supported by the Wasm runtime", ErrInvalidSpec)
	}
	return checkMounts(spec.Mounts)
}

// compile returns the compiled module for key, pinned (the caller unpins
// it with unpin), compiling it at most once at a time per key. Failures
// are not cached.
func (r *Runtime) compile(ctx context.Context, key, path string) (*moduleEntry, error) {
	if key == "" {
		mod, _, err := r.compileFile(ctx, path)
		if err != nil {
			return nil, err
		}
		e := &moduleEntry{ready: make(chan struct{}), mod: mod, refs: 1}
		close(e.ready)
		return e, nil
	}
	r.mu.Lock()
	if e, ok := r.modules.entries[key]; ok {
		r.modules.acquire(e)
		r.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			r.unpin(e)
			return nil, ctx.Err()
		}
		if e.err == nil {
			return e, nil
		}
		r.unpin(e)
		return r.compile(ctx, key, path) // the other attempt failed: try ourselves
	}
	e := &moduleEntry{key: key, ready: make(chan struct{}), refs: 1}
	r.modules.entries[key] = e
	r.mu.Unlock()

	var mod wazero.CompiledModule
	var n int
	var err error
	if r.disk != nil {
		err = r.disk.record(key, func() (err error) { mod, n, err = r.compileFile(ctx, path); return err })
	} else {
		mod, n, err = r.compileFile(ctx, path)
	}
	r.mu.Lock()
	e.mod, e.err = mod, err
	var evicted []*moduleEntry
	if err != nil || r.closed {
		r.modules.drop(e)
	} else {
		e.size = int64(n) * compiledSizeFactor
		evicted = r.modules.added(e)
	}
	r.mu.Unlock()
	close(e.ready)
	closeEntries(evicted)
	if err != nil {
		r.unpin(e)
		return nil, err
	}
	return e, nil
}

// CPULimits says why containers' CPU quotas are not enforced on this
// node, or nil when they are.
func (r *Runtime) CPULimits() error {
	if r.cpuErr != nil {
		return fmt.Errorf("CPU limits of Wasm containers are not enforced: %w", r.cpuErr)
	}
	return nil
}

// Forget removes what the runtime keeps of the module of key, its image
// having left the node: its compiled code on disk, and in memory unless a
// container still uses it (then it goes when the last one exits).
func (r *Runtime) Forget(key string) {
	if key == "" {
		return
	}
	r.mu.Lock()
	var closed []*moduleEntry
	if e, ok := r.modules.entries[key]; ok {
		select {
		case <-e.ready:
			r.modules.drop(e)
			if e.refs == 0 {
				if e.elem != nil {
					r.modules.idle.Remove(e.elem)
					e.elem = nil
				}
				closed = append(closed, e)
			}
		default: // being compiled: the next Forget, or the LRU, takes it
		}
	}
	r.mu.Unlock()
	closeEntries(closed)
	if r.disk != nil {
		r.disk.forget(key)
	}
}

// unpin releases a container's hold on a compiled module; a module no
// longer cached is closed once unpinned.
func (r *Runtime) unpin(e *moduleEntry) {
	r.mu.Lock()
	closing := r.modules.release(e)
	r.mu.Unlock()
	closeEntries(closing)
}

// compileFile compiles the module at path and returns it with the size of
// its binary.
func (r *Runtime) compileFile(ctx context.Context, path string) (wazero.CompiledModule, int, error) {
	bin, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, fmt.Errorf("read module: %w", err)
	}
	size := len(bin)
	mod, err := r.rt.CompileModule(ctx, mergeData(bin)) // datamerge.go
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		return nil, 0, fmt.Errorf("%w: %w", ErrInvalidModule, err)
	}
	if err := r.checkCommand(mod); err != nil {
		mod.Close(ctx)
		return nil, 0, fmt.Errorf("%w: %w", ErrInvalidModule, err)
	}
	return mod, size, nil
}

// checkCommand checks that mod is a WASI command module this runtime can
// link: it exports _start and imports nothing but WASI preview1 functions.
func (r *Runtime) checkCommand(mod wazero.CompiledModule) error {
	if _, ok := mod.ExportedFunctions()["_start"]; !ok {
		return errors.New("module exports no _start function (not a WASI command module)")
	}
	for _, f := range mod.ImportedFunctions() {
		module, name, _ := f.Import()
		if module != wasiModule || !r.wasi[name] {
			return fmt.Errorf("module imports function %s.%s, which this runtime does not provide (only %s)", module, name, wasiModule)
		}
	}
	for _, m := range mod.ImportedMemories() {
		module, name, _ := m.Import()
		return fmt.Errorf("module imports memory %s.%s, which this runtime does not provide", module, name)
	}
	return nil
}

func (r *Runtime) track(c *Container) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.running[c] = struct{}{}
	return true
}

func (r *Runtime) untrack(c *Container) {
	r.mu.Lock()
	delete(r.running, c)
	r.mu.Unlock()
}

// Neutral returns r as a runtime.Runtime, for the CRI server, which holds
// runtimes of every kind by their handler.
func (r *Runtime) Neutral() skiffrt.Runtime { return neutral{r} }

type neutral struct{ *Runtime }

func (n neutral) Create(ctx context.Context, spec skiffrt.ContainerSpec) (skiffrt.Container, error) {
	c, err := n.Runtime.Create(ctx, spec)
	if err != nil {
		return nil, err // not a nil *Container in an interface
	}
	return c, nil
}
