package oci

import (
	"bytes"
	"encoding/json"
	"fmt"
	goruntime "runtime"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// deniedSyscalls are the system calls skiff's default seccomp profile
// refuses with EPERM: those that load code into the kernel, mount or move
// file systems, reboot or swap, trace or read other processes, manage
// keys, join namespaces, open files by handle, or set the clock. It is a
// deny list: everything else is allowed (the capability set already keeps
// most of these from an unprivileged container; the profile keeps them
// from one given capabilities too). Names the kernel or libseccomp do not
// know are skipped by runc.
var deniedSyscalls = []string{
	"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
	"create_module", "get_kernel_syms", "query_module",
	"mount", "umount", "umount2", "pivot_root", "fsopen", "fsmount", "fspick",
	"fsconfig", "move_mount", "open_tree", "mount_setattr",
	"swapon", "swapoff", "reboot",
	"bpf", "perf_event_open", "ptrace", "process_vm_readv", "process_vm_writev",
	"kcmp", "pidfd_getfd",
	"keyctl", "add_key", "request_key",
	"setns", "open_by_handle_at", "name_to_handle_at", "userfaultfd",
	"clock_settime", "clock_settime64", "clock_adjtime", "clock_adjtime64",
	"settimeofday", "stime", "adjtimex",
	"acct", "quotactl", "quotactl_fd", "iopl", "ioperm", "lookup_dcookie",
	"nfsservctl", "vm86", "vm86old", "uselib", "_sysctl", "sysfs", "ustat",
	"syslog", "vhangup",
}

// defaultSeccomp is skiff's default profile (deniedSyscalls).
func defaultSeccomp() *specs.LinuxSeccomp {
	eperm := uint(unix.EPERM)
	return &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: seccompArches(),
		Syscalls: []specs.LinuxSyscall{{
			Names:    deniedSyscalls,
			Action:   specs.ActErrno,
			ErrnoRet: &eperm,
		}},
	}
}

// seccompArches are the system call ABIs a process of this machine may
// use, all of which the profile covers.
func seccompArches() []specs.Arch {
	switch goruntime.GOARCH {
	case "amd64":
		return []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}
	case "arm64":
		return []specs.Arch{specs.ArchAARCH64, specs.ArchARM}
	case "386":
		return []specs.Arch{specs.ArchX86}
	case "arm":
		return []specs.Arch{specs.ArchARM}
	case "riscv64":
		return []specs.Arch{specs.ArchRISCV64}
	case "ppc64le":
		return []specs.Arch{specs.ArchPPC64LE}
	case "s390x":
		return []specs.Arch{specs.ArchS390X, specs.ArchS390}
	}
	return nil
}

// maxSeccompProfile bounds a profile's JSON (Docker's default is 20 KB).
const maxSeccompProfile = 1 << 20

// seccompProfile is a profile in Docker's format, a superset of the OCI
// runtime spec's: names of one syscall rule may also come as "name",
// architectures as an archMap, and a rule may apply only with some
// capabilities, architectures or kernels (includes, excludes).
type seccompProfile struct {
	DefaultAction   specs.LinuxSeccompAction `json:"defaultAction"`
	DefaultErrnoRet *uint                    `json:"defaultErrnoRet,omitempty"`
	Architectures   []specs.Arch             `json:"architectures,omitempty"`
	ArchMap         []struct {
		Arch    specs.Arch   `json:"architecture"`
		SubArch []specs.Arch `json:"subArchitectures"`
	} `json:"archMap,omitempty"`
	Flags        []specs.LinuxSeccompFlag `json:"flags,omitempty"`
	ListenerPath string                   `json:"listenerPath,omitempty"`
	Syscalls     []struct {
		Name     string                   `json:"name,omitempty"`
		Names    []string                 `json:"names,omitempty"`
		Action   specs.LinuxSeccompAction `json:"action"`
		ErrnoRet *uint                    `json:"errnoRet,omitempty"`
		Args     []specs.LinuxSeccompArg  `json:"args,omitempty"`
		Comment  string                   `json:"comment,omitempty"`
		Includes seccompFilter            `json:"includes,omitempty"`
		Excludes seccompFilter            `json:"excludes,omitempty"`
	} `json:"syscalls,omitempty"`
}

// seccompFilter is when a rule of a Docker profile applies.
type seccompFilter struct {
	Arches    []string `json:"arches,omitempty"`
	Caps      []string `json:"caps,omitempty"`
	MinKernel string   `json:"minKernel,omitempty"`
}

// parseSeccomp turns a Localhost profile into the runtime spec's form, for
// a container with capabilities caps. Errors name the field.
func parseSeccomp(b []byte, caps []string) (*specs.LinuxSeccomp, error) {
	if len(b) == 0 {
		return nil, invalid("seccompProfile: empty (a Localhost profile needs its JSON)")
	}
	if len(b) > maxSeccompProfile {
		return nil, invalid("seccompProfile: %d bytes, past the limit of %d", len(b), maxSeccompProfile)
	}
	var p seccompProfile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, invalid("seccompProfile: %v", err)
	}
	if err := checkAction("seccompProfile.defaultAction", p.DefaultAction); err != nil {
		return nil, err
	}
	if p.ListenerPath != "" {
		return nil, invalid("seccompProfile.listenerPath: notifying a listener is not supported by skiff")
	}
	s := &specs.LinuxSeccomp{DefaultAction: p.DefaultAction, DefaultErrnoRet: p.DefaultErrnoRet, Flags: p.Flags}
	for _, a := range p.Architectures {
		s.Architectures = append(s.Architectures, a)
	}
	for _, m := range p.ArchMap {
		s.Architectures = append(s.Architectures, m.Arch)
		s.Architectures = append(s.Architectures, m.SubArch...)
	}
	for i, a := range s.Architectures {
		if !strings.HasPrefix(string(a), "SCMP_ARCH_") {
			return nil, invalid("seccompProfile.architectures[%d] %q: want SCMP_ARCH_...", i, a)
		}
	}
	for i, r := range p.Syscalls {
		field := fmt.Sprintf("seccompProfile.syscalls[%d]", i)
		if err := checkAction(field+".action", r.Action); err != nil {
			return nil, err
		}
		names := r.Names
		if r.Name != "" {
			names = append(slices.Clone(names), r.Name)
		}
		if len(names) == 0 {
			return nil, invalid("%s.names: none", field)
		}
		for j, a := range r.Args {
			switch a.Op {
			case specs.OpNotEqual, specs.OpLessThan, specs.OpLessEqual, specs.OpEqualTo, specs.OpGreaterEqual, specs.OpGreaterThan, specs.OpMaskedEqual:
			default:
				return nil, invalid("%s.args[%d].op %q: want SCMP_CMP_NE, _LT, _LE, _EQ, _GE, _GT or _MASKED_EQ", field, j, a.Op)
			}
			if a.Index > 5 {
				return nil, invalid("%s.args[%d].index %d: want 0 to 5", field, j, a.Index)
			}
		}
		ok, err := r.Includes.matches(caps, true)
		if err != nil {
			return nil, invalid("%s.includes: %v", field, err)
		}
		if !ok {
			continue
		}
		if len(r.Excludes.Arches)+len(r.Excludes.Caps) > 0 || r.Excludes.MinKernel != "" {
			if excluded, err := r.Excludes.matches(caps, false); err != nil {
				return nil, invalid("%s.excludes: %v", field, err)
			} else if excluded {
				continue
			}
		}
		s.Syscalls = append(s.Syscalls, specs.LinuxSyscall{Names: names, Action: r.Action, ErrnoRet: r.ErrnoRet, Args: r.Args})
	}
	return s, nil
}

func checkAction(field string, a specs.LinuxSeccompAction) error {
	switch a {
	case specs.ActKill, specs.ActKillProcess, specs.ActKillThread, specs.ActTrap, specs.ActErrno, specs.ActTrace, specs.ActAllow, specs.ActLog:
		return nil
	case specs.ActNotify:
		return invalid("%s %q: notifying a listener is not supported by skiff", field, a)
	}
	return invalid("%s %q: want SCMP_ACT_ALLOW, _ERRNO, _KILL, _KILL_PROCESS, _KILL_THREAD, _TRAP, _TRACE or _LOG", field, a)
}

// matches reports whether a container with caps on this machine meets
// the filter: every condition (includes, all) or any (excludes, !all).
func (f seccompFilter) matches(caps []string, all bool) (bool, error) {
	var conds []bool
	if len(f.Arches) > 0 {
		conds = append(conds, slices.Contains(f.Arches, goruntime.GOARCH) || slices.ContainsFunc(seccompArches(), func(a specs.Arch) bool {
			return slices.Contains(f.Arches, strings.ToLower(strings.TrimPrefix(string(a), "SCMP_ARCH_")))
		}))
	}
	for _, c := range f.Caps {
		n, _ := capName(c)
		conds = append(conds, slices.Contains(caps, n))
	}
	if f.MinKernel != "" {
		ok, err := kernelAtLeast(f.MinKernel)
		if err != nil {
			return false, err
		}
		conds = append(conds, ok)
	}
	if all {
		return !slices.Contains(conds, false), nil
	}
	return slices.Contains(conds, true), nil
}

// kernelAtLeast reports whether the running kernel is at least v
// ("major.minor").
func kernelAtLeast(v string) (bool, error) {
	var want [2]int
	if _, err := fmt.Sscanf(v, "%d.%d", &want[0], &want[1]); err != nil {
		return false, fmt.Errorf("minKernel %q: want major.minor", v)
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false, err
	}
	var have [2]int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &have[0], &have[1])
	return have[0] > want[0] || have[0] == want[0] && have[1] >= want[1], nil
}
