// Package runtime holds what every container runtime of a node shares, and
// what the CRI server speaks to them in: the container spec, the
// container's state, status and resource use, the exit codes and reasons
// (as the kubelet reports them), and the errors a runtime returns.
// runtime/wasm implements Runtime with wazero; runtime/oci with runc.
// A runtime knows nothing of pods' scheduling, only of containers (and
// each container of the network namespace of its sandbox).
package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Runtime creates and runs containers of one kind (one CRI runtime
// handler). Implementations are safe for concurrent use.
type Runtime interface {
	// Create prepares a container (for Wasm: compiles the module); errors
	// wrap ErrInvalidImage or ErrInvalidSpec for bad input.
	Create(ctx context.Context, spec ContainerSpec) (Container, error)
	// Forget drops what the runtime keeps of an image (compiled code,
	// unpacked layers), the image having left the node.
	Forget(imageID string)
	// Close releases the runtime. The containers of a runtime that runs
	// them in-process (Wasm) end with it; those of an Adopter keep running
	// for the next process to adopt.
	Close(ctx context.Context) error
}

// Adopter is a Runtime whose containers outlive the node process (runc's,
// as containerd's shims make them): a new process takes over the
// containers an earlier one created.
type Adopter interface {
	Runtime
	// Adopt returns the container spec.ID that an earlier process created
	// with this spec, in whatever state it is now (created, running or
	// exited; an exit the runtime could not witness is reported with
	// ExitCodeUnknown). Its output from now on goes to spec.Stdout and
	// spec.Stderr. ErrNotFound: the runtime has no trace of it.
	Adopt(ctx context.Context, spec ContainerSpec) (Container, error)
}

// Execer is a Container that can run further processes inside itself
// (OCI: runc exec). A runtime whose containers cannot (Wasm) does not
// implement it.
type Execer interface {
	// Exec runs p in the container and returns its exit code once it
	// has exited and its output is copied. Ending ctx kills it.
	Exec(ctx context.Context, p Process) (exitCode int32, err error)
}

// Process is a process Exec runs in a container.
type Process struct {
	Args []string // argv, argv[0] included, looked up in the container's PATH
	Env  []string // "K=V", added to the container's own
	// TTY gives the process a terminal; Stdout then carries both
	// streams and Stderr is unused.
	TTY    bool
	Stdin  io.Reader // nil: no input (stdin at EOF)
	Stdout io.Writer // nil: discarded
	Stderr io.Writer // nil: discarded
	// Resize carries the terminal's size changes (TTY only); may be nil.
	// A size already waiting when Exec is called is the terminal's size
	// from the start.
	Resize <-chan TerminalSize
}

// Attacher is a Container whose standard streams can be joined while it
// runs (OCI: kubectl attach), as containerd's CRI does. A runtime whose
// containers cannot (Wasm) does not implement it.
type Attacher interface {
	// Attach relays the container's output written from now on to
	// a.Stdout and a.Stderr (as well as to the spec's writers, which never
	// wait for an attached client: one that falls behind is cut off,
	// Attach then returning an error), and a.Stdin to the container's
	// stdin (or terminal), if it was created with one; a.Resize resizes a
	// TTY container's terminal. It returns when ctx ends, when the
	// container has exited and its output is relayed, or when a.Stdin
	// ends, except for a StdinOnce container without a terminal: its
	// stdin is then closed and the output relayed until it exits. The
	// goroutine copying a.Stdin ends at a.Stdin's first Read to return
	// after that. Several sessions may be attached at once; safe for
	// concurrent use.
	Attach(ctx context.Context, a AttachIO) error
}

// AttachIO are the streams of an attach session; a nil member is not used.
type AttachIO struct {
	Stdin  io.Reader
	Stdout io.Writer // a TTY container's terminal carries both streams here
	Stderr io.Writer
	// Resize carries the terminal's size changes (TTY only); a size
	// already waiting when Attach is called applies at once.
	Resize <-chan TerminalSize
}

// TerminalSize is a terminal's size in characters.
type TerminalSize struct{ Width, Height uint16 }

// Container is one created container. Status and Stats are cheap and
// never block on the container's code; Done is closed once it has exited.
type Container interface {
	// Start runs the container; it returns once it runs, or with the
	// error that kept it from starting (it is then Exited, StartError).
	Start(ctx context.Context) error
	// Stop asks the container to stop and kills it if it has not exited
	// after grace; grace <= 0 kills at once. It waits for the exit until
	// ctx ends; the kill at the end of grace happens even if ctx ends
	// first. It is idempotent, and a later call with a shorter grace
	// brings the kill forward.
	Stop(ctx context.Context, grace time.Duration) error
	Done() <-chan struct{}
	Status() Status
	Stats() Stats
	// Remove releases what the container holds on the node (its rootfs,
	// bundle and cgroup). The container must have exited (ErrState
	// otherwise); idempotent.
	Remove(ctx context.Context) error
}

// ContainerSpec is what a runtime needs to create a container.
type ContainerSpec struct {
	ID string // for logs and cgroup names
	// ImageID identifies the image (its compiled or unpacked form may be
	// cached under it); empty disables such caching.
	ImageID string
	// ImagePath is the image's content on the node: the module file for
	// Wasm. OCI images give Layers instead.
	ImagePath string
	// Layers are the directories of an OCI image's unpacked layers,
	// lowest first, in the form overlayfs reads (whiteouts as overlay
	// whiteouts); the runtime stacks them under a writable layer of the
	// container's own. They must not change while the container exists.
	Layers []string
	// NetNSPath is the sandbox's network namespace, which the container
	// joins; empty: the node's.
	NetNSPath string
	// Hostname is the container's host name (the pod's).
	Hostname string
	// WorkingDir is the directory the process starts in; empty: "/" (OCI)
	// or unset (Wasm).
	WorkingDir string
	// User is who the process runs as, in the image config's form:
	// "uid", "uid:gid", "name" or "name:group", names looked up in the
	// container's /etc/passwd and /etc/group; empty: root (OCI).
	User string
	// AdditionalGIDs are supplementary groups of the process.
	AdditionalGIDs []uint32
	// ReadOnlyRootfs mounts the container's root filesystem read-only.
	ReadOnlyRootfs bool
	// CapAdd and CapDrop change the runtime's default capability set
	// (names as "CAP_NET_ADMIN" or "NET_ADMIN"; "ALL" in CapDrop drops
	// every default).
	CapAdd, CapDrop []string
	// NoNewPrivileges keeps the process from gaining privileges on exec.
	NoNewPrivileges bool
	// Seccomp is "" or SeccompRuntimeDefault (the runtime's default
	// profile), SeccompUnconfined, or SeccompLocalhost (SeccompProfile).
	Seccomp string
	// SeccompProfile is the profile of Seccomp SeccompLocalhost: JSON in
	// the format of Docker's and the OCI runtime spec's (defaultAction,
	// architectures, syscalls: [{names, action, errnoRet, args}]).
	SeccompProfile []byte
	// Privileged gives the container every capability the node process
	// has (CapAdd and CapDrop are ignored), no seccomp profile (Seccomp is
	// ignored), no masked or read-only paths, /sys and its cgroups
	// read-write, and the node's devices (OCI). Only the node's root user
	// may ask for it (through CRI); it hands the node over.
	Privileged bool
	// HostPID and HostIPC put the container in the node's PID or IPC
	// namespace instead of one of its own.
	HostPID, HostIPC bool
	// PIDNamespace, when set and not HostPID, is the path of a PID
	// namespace the container joins instead of having one of its own
	// ("/proc/<pid>/ns/pid" of its pod's holder, runtime/pidns).
	PIDNamespace string
	// Sysctls are kernel parameters set in the container's namespaces
	// before it runs, by dotted name ("kernel.shm_rmid_forced"): those of
	// its IPC namespace (kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*;
	// not with HostIPC) and of its network namespace (net.*; only with a
	// NetNSPath). Others are refused: they would change the node's.
	Sysctls map[string]string
	// MaskedPaths and ReadonlyPaths, when not nil, replace the runtime's
	// default masked (unreadable) and read-only paths; an empty, non-nil
	// slice means none. Absolute paths in the container.
	MaskedPaths, ReadonlyPaths []string
	// OOMScoreAdj is the process's oom_score_adj; the runtime clamps it
	// to what the node may set.
	OOMScoreAdj int
	// CPUShares is the container's CPU weight (cgroup v1 shares); 0: the
	// default.
	CPUShares uint64
	Args      []string  // argv, argv[0] included; no empty strings
	Env       []string  // "K=V"
	Stdout    io.Writer // nil: discarded
	Stderr    io.Writer // nil: discarded
	Mounts    []Mount   // host directories the container sees
	// ImageMounts are images' file systems the container sees, read-only
	// (OCI only: the Wasm runtime refuses them).
	ImageMounts []ImageMount
	// MemoryLimit caps the container's memory, in bytes; past it the
	// container ends OOMKilled. Zero: the runtime's default.
	MemoryLimit uint64
	// CPUBudget, when positive, is the CPU time the container may use in
	// all: past it, it is killed, reason CPUBudgetExceeded.
	CPUBudget time.Duration
	// CPUQuota, when positive, is the CPU time the container may use in
	// each CPUPeriod (zero: DefaultCPUPeriod); it is throttled past it.
	CPUQuota  time.Duration
	CPUPeriod time.Duration
	// Ports are the TCP ports the container accepts connections on, and
	// Listen opens a listening socket for one in the sandbox's network
	// namespace. A runtime whose containers listen for themselves (OCI)
	// ignores them.
	Ports  []int
	Listen func(port int) (*os.File, error)
	// Stdin gives the container a standard input that attach sessions
	// write to (Attacher); without it, stdin is at end of file (OCI:
	// /dev/null). A runtime that cannot (Wasm) ignores it.
	Stdin bool
	// StdinOnce closes the container's stdin (end of file) once the first
	// attach session that carried stdin has ended; without it, stdin
	// stays open across sessions. Only with Stdin.
	StdinOnce bool
	// TTY runs the container with a terminal: its output, both streams,
	// goes to Stdout, and attach sessions type into the terminal and may
	// resize it. A runtime that cannot (Wasm) ignores it.
	TTY bool
}

// Seccomp settings of ContainerSpec.
const (
	SeccompRuntimeDefault = "runtime/default"
	SeccompUnconfined     = "unconfined"
	SeccompLocalhost      = "localhost"
)

// DefaultCPUPeriod is the CFS period of a CPU quota without one, as the
// kubelet's.
const DefaultCPUPeriod = 100 * time.Millisecond

// Mount is a host directory a container sees at ContainerPath.
type Mount struct {
	HostPath      string // absolute: the directory on the node
	ContainerPath string // absolute, clean: where the container sees it
	ReadOnly      bool
	// Propagation is how mounts made later under the mount travel
	// (OCI only; the Wasm runtime refuses all but PropagationPrivate).
	Propagation Propagation
}

// ImageMount is an image's file system, or a directory of it, that a
// container sees read-only at ContainerPath (a CRI image volume).
type ImageMount struct {
	// Layers are the image's unpacked layer directories, lowest first
	// (the image store's Layers).
	Layers []string
	// SubPath, when not empty, is the directory of the image to mount
	// instead of its root: relative, clean, no "..", resolved inside the
	// image (a symbolic link in it cannot lead out). It must exist.
	SubPath string
	// ContainerPath is absolute and clean: where the container sees it.
	ContainerPath string
}

// Propagation is a mount's propagation, as the kubelet's
// mountPropagation.
type Propagation string

const (
	// PropagationPrivate (rprivate): mounts made on either side stay there.
	PropagationPrivate Propagation = ""
	// PropagationHostToContainer (rslave): mounts the node makes under
	// HostPath later appear in the container. HostPath must be on a
	// shared or slave mount of the node.
	PropagationHostToContainer Propagation = "rslave"
	// PropagationBidirectional (rshared): and the container's mounts
	// appear on the node. HostPath must be on a shared mount of the node,
	// and the container privileged.
	PropagationBidirectional Propagation = "rshared"
)

// Errors returned by runtimes, wrapped with the operation and the container.
var (
	// ErrInvalidImage: the image cannot run in this runtime (a module
	// that does not compile, or is not a WASI command).
	ErrInvalidImage = errors.New("invalid image")
	// ErrInvalidSpec: the container spec cannot be run (empty argument,
	// bad env entry).
	ErrInvalidSpec = errors.New("invalid container spec")
	// ErrState: the container is not in a state that allows the call.
	ErrState = errors.New("invalid container state")
	// ErrClosed: the runtime is closed.
	ErrClosed = errors.New("runtime closed")
	// ErrNotFound: the runtime has no trace of the container (Adopt).
	ErrNotFound = errors.New("container not found")
	// ErrUnsupported: the runtime cannot do what was asked (exec in Wasm).
	ErrUnsupported = errors.New("not supported by the runtime")
)

// Exit codes a runtime reports for ends that are not the container's own
// choice, as the signals would give them.
const (
	ExitCodeTrap       int32 = 134 // 128 + SIGABRT
	ExitCodeStopped    int32 = 137 // 128 + SIGKILL
	ExitCodeStartError int32 = 128
	// ExitCodeUnknown: the container exited while no process of the
	// node could witness its exit status.
	ExitCodeUnknown int32 = 255
)

// Reasons, as Kubernetes reports them for container terminations.
const (
	ReasonCompleted  = "Completed"
	ReasonError      = "Error"
	ReasonStartError = "StartError"
	// ReasonOOMKilled: the container met its memory limit; exit code 137.
	ReasonOOMKilled = "OOMKilled"
	// ReasonCPUBudgetExceeded: the container used up its CPU budget and
	// was killed; exit code 137.
	ReasonCPUBudgetExceeded = "CPUBudgetExceeded"
	// ReasonUnknown: the exit status was lost (ExitCodeUnknown).
	ReasonUnknown = "Unknown"
)

// State is a container's lifecycle state.
type State int

// States, in lifecycle order. A container moves Created -> Running -> Exited,
// or Created -> Exited when stopped before it was started.
const (
	StateCreated State = iota
	StateRunning
	StateExited
)

func (s State) String() string {
	switch s {
	case StateCreated:
		return "created"
	case StateRunning:
		return "running"
	case StateExited:
		return "exited"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Status is a snapshot of a container's state.
type Status struct {
	State      State
	ExitCode   int32
	Reason     string
	Message    string
	StartedAt  time.Time
	FinishedAt time.Time
}

// Stats is a snapshot of a container's resource use.
type Stats struct {
	Timestamp time.Time
	// MemoryBytes is the container's memory in use (for Wasm: its linear
	// memory); 0 once it has exited.
	MemoryBytes uint64
	// CPUTime is the CPU time the container has used.
	CPUTime time.Duration
}
