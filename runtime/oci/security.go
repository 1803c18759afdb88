package oci

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	skiffrt "skiff.dev/skiff/runtime"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// ownCapBnd reads the node process's capability bounding set: a
// container can be given no capability outside it (runc fails with
// "unable to apply caps: operation not permitted" otherwise).
func ownCapBnd() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("read the capability bounding set: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return 0, fmt.Errorf("read the capability bounding set: %q: %w", line, err)
			}
			return n, nil
		}
	}
	return 0, errors.New("read the capability bounding set: no CapBnd in /proc/self/status")
}

// clampCaps keeps of caps those in the bounding set bnd, as containerd
// does for "ALL" and privileged containers: a node whose own process
// lacks CAP_SYS_RESOURCE (in a container itself, say) cannot hand it on.
func clampCaps(caps []string, bnd uint64) []string {
	return slices.DeleteFunc(slices.Clone(caps), func(c string) bool {
		i := slices.Index(knownCaps, c)
		return i < 0 || bnd&(1<<uint(i)) == 0
	})
}

// sysctlName is a sysctl's dotted name.
var sysctlName = regexp.MustCompile(`^[a-z0-9_]+(\.[A-Za-z0-9_-]+)+$`)

// sysctlNamespace says which of the container's namespaces holds sysctl
// name, as runc and the kubelet know them: "ipc", "net", or "" for one
// that would change the node's.
func sysctlNamespace(name string) string {
	switch {
	case name == "kernel.sem", strings.HasPrefix(name, "kernel.shm"), strings.HasPrefix(name, "kernel.msg"),
		strings.HasPrefix(name, "fs.mqueue."):
		return "ipc"
	case strings.HasPrefix(name, "net."):
		return "net"
	}
	return ""
}

// validateSysctls checks that each sysctl is one of a namespace the
// container has of its own.
func validateSysctls(spec *skiffrt.ContainerSpec) error {
	for _, name := range slices.Sorted(maps.Keys(spec.Sysctls)) {
		v := spec.Sysctls[name]
		if !sysctlName.MatchString(name) {
			return invalid("sysctls[%s]: not a sysctl name (want dotted, as kernel.shm_rmid_forced)", name)
		}
		if strings.ContainsAny(v, "\n\x00") || len(v) > 4096 {
			return invalid("sysctls[%s] %q: want a value of one line", name, v)
		}
		switch sysctlNamespace(name) {
		case "ipc":
			if spec.HostIPC {
				return invalid("sysctls[%s]: an IPC sysctl needs an IPC namespace of the container's own, not the node's (hostIPC)", name)
			}
		case "net":
			if spec.NetNSPath == "" {
				return invalid("sysctls[%s]: a network sysctl needs a network namespace of the pod's own, not the node's", name)
			}
		default:
			return invalid("sysctls[%s]: not a namespaced sysctl (only kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.* and net.*): it would change the node's", name)
		}
	}
	return nil
}

// hostDevices lists the node's device nodes under /dev, for a privileged
// container, as containerd's WithHostDevices: runc creates each in the
// container's /dev. Left out: the directories of mounts a container has
// of its own (pts, shm, mqueue) and the console and ptmx, which runc sets
// up itself.
func hostDevices() ([]specs.LinuxDevice, error) {
	var out []specs.LinuxDevice
	err := filepath.WalkDir("/dev", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == "/dev" {
				return err
			}
			return nil // gone meanwhile, or unreadable: not ours to give
		}
		if d.IsDir() {
			switch filepath.Base(path) {
			case "pts", "shm", "mqueue", "fd", ".lxc", ".lxd-mounts", ".udev":
				if path != "/dev" {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if path == "/dev/console" || path == "/dev/ptmx" || d.Type()&fs.ModeDevice == 0 {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return nil
		}
		typ := "c"
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			typ = "b"
		}
		mode := fs.FileMode(st.Mode & 0o777)
		uid, gid := st.Uid, st.Gid
		out = append(out, specs.LinuxDevice{
			Path: path, Type: typ,
			Major: int64(unix.Major(st.Rdev)), Minor: int64(unix.Minor(st.Rdev)),
			FileMode: &mode, UID: &uid, GID: &gid,
		})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the node's devices: %w", err)
	}
	return out, nil
}

// checkPropagation checks that the node's mount that holds the host path
// of a mount with propagation passes events on, as runc needs (and as
// containerd checks): shared for bidirectional, shared or slave for
// host-to-container. mountinfo is /proc/self/mountinfo's content.
func checkPropagation(i int, m skiffrt.Mount, mountinfo []byte) error {
	if m.Propagation == skiffrt.PropagationPrivate {
		return nil
	}
	p, err := filepath.EvalSymlinks(m.HostPath)
	if err != nil {
		return invalid("mounts[%d].hostPath %q: %v", i, m.HostPath, errors.Unwrap(err))
	}
	point, optional := "", ""
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options optional... - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp != "/" && p != mp && !strings.HasPrefix(p, mp+"/") {
			continue
		}
		if len(mp) >= len(point) { // the last of equal ones is on top
			point, optional = mp, ""
			for _, f := range fields[6:] {
				if f == "-" {
					break
				}
				optional += " " + f
			}
		}
	}
	shared := strings.Contains(optional, " shared:")
	slave := strings.Contains(optional, " master:")
	switch {
	case m.Propagation == skiffrt.PropagationBidirectional && !shared:
		return invalid("mounts[%d].propagation %q: the host path %s is on the node's mount %s, which is not shared (make it so: mount --make-rshared %s)",
			i, m.Propagation, m.HostPath, point, point)
	case m.Propagation == skiffrt.PropagationHostToContainer && !shared && !slave:
		return invalid("mounts[%d].propagation %q: the host path %s is on the node's mount %s, which is neither shared nor a slave (make it shared: mount --make-rshared %s)",
			i, m.Propagation, m.HostPath, point, point)
	}
	return nil
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
