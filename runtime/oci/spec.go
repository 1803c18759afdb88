package oci

import (
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	skiffrt "skiff.dev/skiff/runtime"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// defaultPath is the PATH of a container whose env has none, as
// containerd's.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// defaultCaps is the capability set of a container, containerd's and
// Docker's default.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// knownCaps are the capabilities of Linux 6.x, by name, in the order of
// their numbers (bit i of a capability mask is knownCaps[i]).
var knownCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// Masked and read-only paths, containerd's defaults.
var (
	maskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
		"/proc/sched_debug", "/proc/scsi", "/sys/firmware",
		"/sys/devices/virtual/powercap",
	}
	readonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// validID is what runc accepts as a container ID, less what could escape
// a directory.
var validID = regexp.MustCompile(`^[A-Za-z0-9_+\-.]+$`)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{skiffrt.ErrInvalidSpec}, args...)...)
}

// validate checks what can be checked of spec without its rootfs.
func validate(spec *skiffrt.ContainerSpec) error {
	if !validID.MatchString(spec.ID) || spec.ID == "." || spec.ID == ".." || len(spec.ID) > 200 {
		return invalid("id %q: want 1 to 200 of letters, digits, '_', '+', '-', '.'", spec.ID)
	}
	if len(spec.Args) == 0 {
		return invalid("args: empty (no command to run)")
	}
	for i, a := range spec.Args {
		if a == "" {
			return invalid("args[%d]: empty string", i)
		}
	}
	if len(spec.Layers) == 0 {
		return invalid("layers: none (an OCI container needs its image's layers)")
	}
	for i, l := range spec.Layers {
		if !filepath.IsAbs(l) || strings.ContainsAny(l, ":,") {
			return invalid("layers[%d] %q: want an absolute path without ':' or ','", i, l)
		}
	}
	for i, kv := range spec.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" || strings.ContainsRune(kv, 0) {
			return invalid("env[%d] %q: want KEY=VALUE", i, kv)
		}
	}
	if spec.WorkingDir != "" && !filepath.IsAbs(spec.WorkingDir) {
		return invalid("workingDir %q: want an absolute path", spec.WorkingDir)
	}
	if spec.NetNSPath != "" && !filepath.IsAbs(spec.NetNSPath) {
		return invalid("netNSPath %q: want an absolute path", spec.NetNSPath)
	}
	if strings.ContainsAny(spec.Hostname, "/\x00 ") || len(spec.Hostname) > 64 {
		return invalid("hostname %q: want at most 64 characters, no '/' or space", spec.Hostname)
	}
	for i, m := range spec.Mounts {
		if !filepath.IsAbs(m.HostPath) {
			return invalid("mounts[%d].hostPath %q: want an absolute path", i, m.HostPath)
		}
		if !filepath.IsAbs(m.ContainerPath) || filepath.Clean(m.ContainerPath) != m.ContainerPath || m.ContainerPath == "/" {
			return invalid("mounts[%d].containerPath %q: want an absolute, clean path other than /", i, m.ContainerPath)
		}
		switch m.Propagation {
		case skiffrt.PropagationPrivate, skiffrt.PropagationHostToContainer:
		case skiffrt.PropagationBidirectional:
			if !spec.Privileged {
				return invalid("mounts[%d].propagation %q: bidirectional propagation needs a privileged container", i, m.Propagation)
			}
		default:
			return invalid("mounts[%d].propagation %q: want %q, %q or none (private)", i, m.Propagation,
				skiffrt.PropagationHostToContainer, skiffrt.PropagationBidirectional)
		}
	}
	if _, err := capabilities(spec.CapAdd, spec.CapDrop); err != nil {
		return err
	}
	switch spec.Seccomp {
	case "", skiffrt.SeccompRuntimeDefault, skiffrt.SeccompUnconfined:
		if len(spec.SeccompProfile) > 0 {
			return invalid("seccompProfile: given with seccomp %q (want %q)", spec.Seccomp, skiffrt.SeccompLocalhost)
		}
	case skiffrt.SeccompLocalhost:
		caps, _ := capabilities(spec.CapAdd, spec.CapDrop)
		if _, err := parseSeccomp(spec.SeccompProfile, caps); err != nil {
			return err
		}
	default:
		return invalid("seccomp %q: want %q, %q or %q", spec.Seccomp, skiffrt.SeccompRuntimeDefault, skiffrt.SeccompUnconfined, skiffrt.SeccompLocalhost)
	}
	if err := validateSysctls(spec); err != nil {
		return err
	}
	for field, paths := range map[string][]string{"maskedPaths": spec.MaskedPaths, "readonlyPaths": spec.ReadonlyPaths} {
		for i, p := range paths {
			if !filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/" {
				return invalid("%s[%d] %q: want an absolute, clean path other than /", field, i, p)
			}
		}
	}
	if spec.OOMScoreAdj < -1000 || spec.OOMScoreAdj > 1000 {
		return invalid("oomScoreAdj %d: want -1000 to 1000", spec.OOMScoreAdj)
	}
	if spec.CPUQuota > 0 && spec.CPUQuota.Microseconds() < 1000 {
		return invalid("cpuQuota %v: want at least 1ms", spec.CPUQuota)
	}
	if spec.CPUPeriod != 0 && (spec.CPUPeriod.Microseconds() < 1000 || spec.CPUPeriod.Microseconds() > 1000000) {
		return invalid("cpuPeriod %v: want 1ms to 1s", spec.CPUPeriod)
	}
	if spec.MemoryLimit != 0 && spec.MemoryLimit < 4<<20 {
		return invalid("memoryLimit %d: want at least 4 MiB", spec.MemoryLimit)
	}
	if spec.CPUShares != 0 && (spec.CPUShares < 2 || spec.CPUShares > 262144) {
		return invalid("cpuShares %d: want 2 to 262144", spec.CPUShares)
	}
	if _, _, err := parseUser(spec.User); err != nil {
		return err
	}
	return nil
}

// capName returns name as "CAP_X", or false if Linux has no such
// capability.
func capName(name string) (string, bool) {
	n := strings.ToUpper(name)
	if !strings.HasPrefix(n, "CAP_") {
		n = "CAP_" + n
	}
	return n, slices.Contains(knownCaps, n)
}

// capabilities returns the default set changed by add and drop.
func capabilities(add, drop []string) ([]string, error) {
	caps := slices.Clone(defaultCaps)
	for i, d := range drop {
		if strings.EqualFold(d, "ALL") {
			caps = nil
			continue
		}
		n, ok := capName(d)
		if !ok {
			return nil, invalid("capDrop[%d] %q: no such capability", i, d)
		}
		caps = slices.DeleteFunc(caps, func(c string) bool { return c == n })
	}
	for i, a := range add {
		if strings.EqualFold(a, "ALL") {
			caps = slices.Clone(knownCaps)
			continue
		}
		n, ok := capName(a)
		if !ok {
			return nil, invalid("capAdd[%d] %q: no such capability", i, a)
		}
		if !slices.Contains(caps, n) {
			caps = append(caps, n)
		}
	}
	return caps, nil
}

// withDefaultPath adds PATH to env if it has none.
func withDefaultPath(env []string) []string {
	for _, kv := range env {
		if strings.HasPrefix(kv, "PATH=") {
			return slices.Clone(env)
		}
	}
	return append(slices.Clone(env), defaultPath)
}

// nodeLimits is what a container's spec takes from the node process.
type nodeLimits struct {
	minOOM int    // its oom_score_adj: the lowest a container may have
	capBnd uint64 // its capability bounding set: the most a container may have
}

// ociSpec is the runtime spec of a container: spec, with its user
// resolved, under cgroup path cgroupsPath, within the node's limits
// (oom_score_adj no lower, capabilities no more than the node process
// has). devices are the node's, for a privileged container.
func ociSpec(spec *skiffrt.ContainerSpec, user specs.User, cgroupsPath string, node nodeLimits, devices []specs.LinuxDevice) *specs.Spec {
	caps, _ := capabilities(spec.CapAdd, spec.CapDrop) // validated
	if spec.Privileged {
		caps = slices.Clone(knownCaps)
	}
	caps = clampCaps(caps, node.capBnd)
	minOOM := node.minOOM
	cwd := spec.WorkingDir
	if cwd == "" {
		cwd = "/"
	}
	oom := max(spec.OOMScoreAdj, minOOM)
	s := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Args: slices.Clone(spec.Args),
			Env:  withDefaultPath(spec.Env),
			Cwd:  cwd,
			User: user,
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  caps,
				Effective: caps,
				Permitted: caps,
			},
			NoNewPrivileges: spec.NoNewPrivileges,
			OOMScoreAdj:     &oom,
		},
		Root:     &specs.Root{Path: "rootfs", Readonly: spec.ReadOnlyRootfs},
		Hostname: spec.Hostname,
		Mounts:   defaultMounts(spec),
		Linux: &specs.Linux{
			CgroupsPath:   cgroupsPath,
			Namespaces:    []specs.LinuxNamespace{{Type: specs.UTSNamespace}, {Type: specs.MountNamespace}},
			Resources:     resources(spec),
			MaskedPaths:   slices.Clone(maskedPaths),
			ReadonlyPaths: slices.Clone(readonlyPaths),
			Sysctl:        maps.Clone(spec.Sysctls),
		},
	}
	if !spec.HostPID {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: spec.PIDNamespace})
	}
	if !spec.HostIPC {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.IPCNamespace})
	}
	if spec.NetNSPath != "" {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: spec.NetNSPath})
	}
	if spec.MaskedPaths != nil {
		s.Linux.MaskedPaths = slices.Clone(spec.MaskedPaths)
	}
	if spec.ReadonlyPaths != nil {
		s.Linux.ReadonlyPaths = slices.Clone(spec.ReadonlyPaths)
	}
	for _, m := range spec.Mounts {
		opts := []string{"rbind", "rprivate"}
		switch m.Propagation {
		case skiffrt.PropagationHostToContainer:
			opts[1] = "rslave"
		case skiffrt.PropagationBidirectional:
			opts[1] = "rshared"
			// runc makes the container's mounts slaves of the node's
			// unless the root's propagation is shared.
			s.Linux.RootfsPropagation = "rshared"
		}
		if m.ReadOnly {
			opts = append(opts, "ro")
		}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: m.ContainerPath, Type: "bind", Source: m.HostPath, Options: opts})
	}
	switch {
	case spec.Privileged:
		// As runc's and containerd's privileged: nothing hidden, nothing
		// filtered, every device.
		s.Linux.MaskedPaths, s.Linux.ReadonlyPaths = nil, nil
		s.Linux.Devices = devices
	case spec.Seccomp == skiffrt.SeccompLocalhost:
		s.Linux.Seccomp, _ = parseSeccomp(spec.SeccompProfile, caps) // validated
	case spec.Seccomp != skiffrt.SeccompUnconfined:
		s.Linux.Seccomp = defaultSeccomp()
	}
	return s
}

// defaultMounts are the file systems every container has, as containerd's:
// /sys and its cgroups read-only but for a privileged container; a
// container in the node's IPC namespace sees the node's /dev/shm.
func defaultMounts(spec *skiffrt.ContainerSpec) []specs.Mount {
	ro := []string{"ro"}
	if spec.Privileged {
		ro = nil
	}
	shm := specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}}
	if spec.HostIPC {
		shm = specs.Mount{Destination: "/dev/shm", Type: "bind", Source: "/dev/shm", Options: []string{"rbind", "rprivate", "nosuid", "noexec", "nodev"}}
	}
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		shm,
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: append([]string{"nosuid", "noexec", "nodev"}, ro...)},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: append([]string{"nosuid", "noexec", "nodev", "relatime"}, ro...)},
	}
}

// resources are the container's cgroup limits: no device but runc's
// defaults (null, zero, full, random, urandom, tty, ptmx, pts), or every
// device for a privileged container, memory with swap capped to the
// same, CPU quota and shares.
func resources(spec *skiffrt.ContainerSpec) *specs.LinuxResources {
	res := &specs.LinuxResources{
		Devices: []specs.LinuxDeviceCgroup{{Allow: spec.Privileged, Access: "rwm"}},
	}
	if spec.MemoryLimit > 0 {
		limit := int64(spec.MemoryLimit)
		swap := limit
		res.Memory = &specs.LinuxMemory{Limit: &limit, Swap: &swap}
	}
	if spec.CPUQuota > 0 || spec.CPUShares > 0 {
		res.CPU = &specs.LinuxCPU{}
		if spec.CPUQuota > 0 {
			period := spec.CPUPeriod
			if period == 0 {
				period = skiffrt.DefaultCPUPeriod
			}
			quota := spec.CPUQuota.Microseconds()
			p := uint64(period.Microseconds())
			res.CPU.Quota, res.CPU.Period = &quota, &p
		}
		if spec.CPUShares > 0 {
			shares := spec.CPUShares
			res.CPU.Shares = &shares
		}
	}
	return res
}

// validCgroupParent checks Config.CgroupParent.
func validCgroupParent(p string) error {
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("CgroupParent %q: want a relative cgroup path without empty, '.' or '..' parts", p)
		}
	}
	return nil
}

// cgroupsPath is the cgroup of container id under parent, absolute (from
// the hierarchies' roots, not the node process's own cgroup).
func cgroupsPath(parent, id string) string {
	return "/" + strings.Trim(parent, "/") + "/" + id
}
