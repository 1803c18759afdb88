package oci

import (
	goruntime "runtime"

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
