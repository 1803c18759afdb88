package cri

import (
	"cmp"
	"encoding/json"
	"slices"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffrt "skiff.dev/skiff/runtime"
	"skiff.dev/skiff/runtime/pidns"
)

// Records are the persistent form of sandboxes and containers, stored as
// JSON in cri.db. Times are Unix nanoseconds (0: not yet).

type sandboxState string

const (
	sandboxReady    sandboxState = "ready"
	sandboxNotReady sandboxState = "notready"
)

type sandboxRecord struct {
	ID             string            `json:"id"`
	Name           string            `json:"name"`
	Namespace      string            `json:"namespace"`
	UID            string            `json:"uid"`
	Attempt        uint32            `json:"attempt"`
	Labels         map[string]string `json:"labels,omitempty"`
	Annotations    map[string]string `json:"annotations,omitempty"`
	LogDirectory   string            `json:"logDirectory,omitempty"`
	Hostname       string            `json:"hostname,omitempty"`
	RuntimeHandler string            `json:"runtimeHandler"`
	HostNetwork    bool              `json:"hostNetwork,omitempty"`
	// Privileged sandboxes may hold privileged containers.
	Privileged bool `json:"privileged,omitempty"`
	// Sysctls apply to each OCI container of the sandbox (validated).
	Sysctls   map[string]string `json:"sysctls,omitempty"`
	NetNSPath string            `json:"netnsPath,omitempty"`
	// CNIID is the container ID the pod network knows the sandbox by:
	// a spare's when its namespace came attached (netns.CNIPool); empty:
	// the sandbox's ID (and in records older than the pool).
	CNIID     string       `json:"cniId,omitempty"`
	IPs       []string     `json:"ips,omitempty"`
	State     sandboxState `json:"state"`
	CreatedAt int64        `json:"createdAt"`
	// PIDHolder holds the pod-wide PID namespace (sandbox_pid.go); nil:
	// none.
	PIDHolder *pidns.Holder `json:"pidHolder,omitempty"`
	// HostPorts are relayed into the sandbox while it is ready (hostports.go).
	HostPorts []portMapping `json:"hostPorts,omitempty"`
	// Files are the contents of the sandbox's /etc files by name, which
	// its first OCI container writes (sandbox_files.go); nil in records
	// from before, whose sandboxes wrote them at once.
	Files map[string]string `json:"files,omitempty"`
}

// cniID is the ID the pod network's Setup and Teardown know the sandbox by.
func (r *sandboxRecord) cniID() string {
	if r.CNIID != "" {
		return r.CNIID
	}
	return r.ID
}

// nameKey is the key under which a sandbox's name is reserved.
func (r *sandboxRecord) nameKey() string {
	return "pod/" + r.Name + "_" + r.Namespace + "_" + r.UID + "_" + itoa(r.Attempt)
}

func (r *sandboxRecord) metadata() *runtime.PodSandboxMetadata {
	return &runtime.PodSandboxMetadata{Name: r.Name, Namespace: r.Namespace, Uid: r.UID, Attempt: r.Attempt}
}

func (r *sandboxRecord) criState() runtime.PodSandboxState {
	if r.State == sandboxReady {
		return runtime.PodSandboxState_SANDBOX_READY
	}
	return runtime.PodSandboxState_SANDBOX_NOTREADY
}

type containerState string

const (
	containerCreated containerState = "created"
	containerRunning containerState = "running"
	containerExited  containerState = "exited"
)

type containerRecord struct {
	ID                 string `json:"id"`
	SandboxID          string `json:"sandboxId"`
	Name               string `json:"name"`
	Attempt            uint32 `json:"attempt"`
	Image              string `json:"image"`              // as the client gave it
	UserSpecifiedImage string `json:"userSpecifiedImage"` // as the user wrote it
	ImageID            string `json:"imageId"`            // resolved: sha256:<hex>
	// RuntimeHandler runs the container ("wasm", "runc"); empty in
	// records older than OCI support, which were all Wasm.
	RuntimeHandler string            `json:"runtimeHandler,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	Annotations    map[string]string `json:"annotations,omitempty"`
	LogPath        string            `json:"logPath,omitempty"` // absolute; empty: no log
	Args           []string          `json:"args"`
	Env            []string          `json:"env,omitempty"`
	MemoryLimit    int64             `json:"memoryLimit,omitempty"` // bytes; 0: the node's default
	CPUQuota       int64             `json:"cpuQuota,omitempty"`    // µs per CPUPeriod; 0: none
	CPUPeriod      int64             `json:"cpuPeriod,omitempty"`   // µs; 0: the default 100ms
	Mounts         []mountRecord     `json:"mounts,omitempty"`
	Ports          []int             `json:"ports,omitempty"` // TCP ports the container listens on (ports.go)
	OCI            *ociRecord        `json:"oci,omitempty"`   // settings only an OCI container has
	State          containerState    `json:"state"`
	CreatedAt      int64             `json:"createdAt"`
	StartedAt      int64             `json:"startedAt,omitempty"`
	FinishedAt     int64             `json:"finishedAt,omitempty"`
	ExitCode       int32             `json:"exitCode"`
	Reason         string            `json:"reason,omitempty"`
	Message        string            `json:"message,omitempty"`

	// Stdin, StdinOnce and TTY are ContainerConfig's (runtime.ContainerSpec
	// has their meaning); a Wasm container ignores them.
	Stdin     bool `json:"stdin,omitempty"`
	StdinOnce bool `json:"stdinOnce,omitempty"`
	TTY       bool `json:"tty,omitempty"`
}

// ociRecord holds the settings of a container that only an OCI runtime
// honours (runtime.ContainerSpec has their meaning).
type ociRecord struct {
	WorkingDir      string   `json:"workingDir,omitempty"`
	User            string   `json:"user,omitempty"`
	AdditionalGIDs  []uint32 `json:"additionalGids,omitempty"`
	ReadOnlyRootfs  bool     `json:"readOnlyRootfs,omitempty"`
	CapAdd          []string `json:"capAdd,omitempty"`
	CapDrop         []string `json:"capDrop,omitempty"`
	NoNewPrivileges bool     `json:"noNewPrivileges,omitempty"`
	Seccomp         string   `json:"seccomp,omitempty"`
	// SeccompProfile is the Localhost profile, as read at create.
	SeccompProfile json.RawMessage `json:"seccompProfile,omitempty"`
	Privileged     bool            `json:"privileged,omitempty"`
	HostPID        bool            `json:"hostPid,omitempty"`
	HostIPC        bool            `json:"hostIpc,omitempty"`
	// PodPID: the container's pid mode is POD; it joins its sandbox's
	// PID namespace when the sandbox has one (sandbox_pid.go).
	PodPID bool `json:"podPid,omitempty"`
	// MaskedPaths and ReadonlyPaths replace the runtime's defaults when
	// set (CRI cannot tell an empty list from none).
	MaskedPaths   []string `json:"maskedPaths,omitempty"`
	ReadonlyPaths []string `json:"readonlyPaths,omitempty"`
	OOMScoreAdj   int      `json:"oomScoreAdj,omitempty"`
	CPUShares     uint64   `json:"cpuShares,omitempty"`
}

// handler is the container's runtime handler.
func (r *containerRecord) handler() string {
	if r.RuntimeHandler == "" {
		return "wasm"
	}
	return r.RuntimeHandler
}

func (r *containerRecord) nameKey() string {
	return "container/" + r.SandboxID + "/" + r.Name + "_" + itoa(r.Attempt)
}

func (r *containerRecord) metadata() *runtime.ContainerMetadata {
	return &runtime.ContainerMetadata{Name: r.Name, Attempt: r.Attempt}
}

func (r *containerRecord) criState() runtime.ContainerState {
	switch r.State {
	case containerCreated:
		return runtime.ContainerState_CONTAINER_CREATED
	case containerRunning:
		return runtime.ContainerState_CONTAINER_RUNNING
	case containerExited:
		return runtime.ContainerState_CONTAINER_EXITED
	}
	return runtime.ContainerState_CONTAINER_UNKNOWN
}

func (r *containerRecord) imageSpec() *runtime.ImageSpec {
	return &runtime.ImageSpec{Image: r.Image, UserSpecifiedImage: r.UserSpecifiedImage}
}

// apply copies a task's status into the record.
func (r *containerRecord) apply(st skiffrt.Status) {
	switch st.State {
	case skiffrt.StateCreated:
		r.State = containerCreated
	case skiffrt.StateRunning:
		r.State = containerRunning
	case skiffrt.StateExited:
		r.State = containerExited
	}
	r.StartedAt = nanos(st.StartedAt)
	r.FinishedAt = nanos(st.FinishedAt)
	r.ExitCode = st.ExitCode
	r.Reason = st.Reason
	r.Message = st.Message
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func itoa(n uint32) string {
	var b [10]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// matchLabels reports whether labels has every key/value of selector.
func matchLabels(labels, selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// sortByCreated sorts items oldest first (ties keep their order).
func sortByCreated[T any](items []T, created func(T) int64) {
	slices.SortStableFunc(items, func(a, b T) int { return cmp.Compare(created(a), created(b)) })
}
