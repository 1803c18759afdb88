package oci

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"skiff.dev/skiff/netns"
	skiffrt "skiff.dev/skiff/runtime"
)

// runOut runs a container of spec with args and returns what it wrote.
func runOut(t *testing.T, r *Runtime, spec skiffrt.ContainerSpec, args ...string) (stdout, stderr string, st skiffrt.Status) {
	t.Helper()
	var out, errOut syncBuffer
	spec.ID, spec.Args, spec.Stdout, spec.Stderr = newID(t), args, &out, &errOut
	_, st = run(t, r, spec)
	return out.String(), errOut.String(), st
}

// nodeCaps is what CapEff of a container with every capability reads:
// the node process's bounding set, less what skiff does not know.
func nodeCaps(r *Runtime) string {
	return fmt.Sprintf("%016x", r.capBnd&(1<<len(knownCaps)-1))
}

// hostDeviceOutsideDefaults is a device of the node that no unprivileged
// container has.
func hostDeviceOutsideDefaults(t *testing.T) string {
	devs, err := hostDevices()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		switch d.Path {
		case "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty":
			continue
		}
		return d.Path
	}
	t.Skip("skipped: the node has no device beyond the default ones")
	return ""
}

func TestPrivileged(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	layer := busyboxLayer(t)
	dev := hostDeviceOutsideDefaults(t)
	script := `grep CapEff /proc/self/status; grep -c Seccomp:.0 /proc/self/status; ` +
		`grep -q ' /sys sysfs rw' /proc/mounts && echo sys-rw; ` +
		`test -e ` + dev + ` && echo has-device; ` +
		`mount -t tmpfs none /tmp && echo mounted; wc -c < /proc/timer_list | grep -qv '^0$' && echo unmasked`
	// A Localhost profile that would refuse mount is ignored, as
	// containerd ignores it.
	out, errOut, st := runOut(t, r, skiffrt.ContainerSpec{Layers: []string{layer}, Privileged: true, CapDrop: []string{"ALL"},
		Seccomp: skiffrt.SeccompLocalhost, SeccompProfile: []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mount"],"action":"SCMP_ACT_ERRNO"}]}`)},
		"sh", "-c", script)
	want := "CapEff:\t" + nodeCaps(r) + "\n1\nsys-rw\nhas-device\nmounted\nunmasked\n"
	if out != want {
		t.Errorf("privileged container wrote %q (stderr %q, %+v), want %q", out, errOut, st, want)
	}
	// Unprivileged: none of it.
	out, _, _ = runOut(t, r, skiffrt.ContainerSpec{Layers: []string{layer}}, "sh", "-c",
		`grep -q ' /sys sysfs ro' /proc/mounts && echo sys-ro; test -e `+dev+` || echo no-device`)
	if out != "sys-ro\nno-device\n" {
		t.Errorf("unprivileged container wrote %q, want sys-ro and no-device", out)
	}
}

func TestAddAllCapsClamped(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	out, errOut, st := runOut(t, r, skiffrt.ContainerSpec{Layers: []string{busyboxLayer(t)}, CapAdd: []string{"ALL"}},
		"grep", "-E", "Cap(Eff|Bnd)", "/proc/self/status")
	want := "CapBnd:\t" + nodeCaps(r) + "\nCapEff:\t" + nodeCaps(r) + "\n"
	if st.ExitCode != 0 || !strings.Contains(out, "CapEff:\t"+nodeCaps(r)) || !strings.Contains(out, "CapBnd:\t"+nodeCaps(r)) {
		t.Errorf("ALL capabilities: %q (stderr %q, %+v), want %q", out, errOut, st, want)
	}
	if got := clampCaps([]string{"CAP_CHOWN", "CAP_SYS_RESOURCE", "CAP_BPF"}, 1<<0|1<<39); strings.Join(got, ",") != "CAP_CHOWN,CAP_BPF" {
		t.Errorf("clampCaps = %v, want CAP_CHOWN and CAP_BPF", got)
	}
}

func TestHostPIDAndIPC(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	layer := busyboxLayer(t)
	initComm, err := os.ReadFile("/proc/1/comm")
	if err != nil {
		t.Fatal(err)
	}
	out, _, _ := runOut(t, r, skiffrt.ContainerSpec{Layers: []string{layer}, HostPID: true}, "cat", "/proc/1/comm")
	if out != string(initComm) {
		t.Errorf("host PID: pid 1 is %q, want the node's init %q", out, initComm)
	}
	out, _, _ = runOut(t, r, skiffrt.ContainerSpec{Layers: []string{layer}}, "cat", "/proc/1/comm")
	if out != "cat\n" {
		t.Errorf("own PID namespace: pid 1 is %q, want cat", out)
	}

	// A SysV segment made on the node shows in the node's IPC namespace only.
	id, err := unix.SysvShmGet(unix.IPC_PRIVATE, 4096, unix.IPC_CREAT|0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.SysvShmCtl(id, unix.IPC_RMID, nil) })
	// /proc/sysvipc/shm lists the segments of the reader's IPC namespace
	// (busybox may lack ipcs): key, then shmid.
	script := "grep -Eq '^ *-?[0-9]+ +" + strconv.Itoa(id) + " ' /proc/sysvipc/shm && echo " + strconv.Itoa(id) + " || echo absent"
	out, errOut, _ := runOut(t, r, skiffrt.ContainerSpec{Layers: []string{layer}, HostIPC: true}, "sh", "-c", script)
	if out != strconv.Itoa(id)+"\n" {
		t.Errorf("host IPC: ipcs shows %q (stderr %q), want the node's segment %d", out, errOut, id)
	}
	out, _, _ = runOut(t, r, skiffrt.ContainerSpec{Layers: []string{layer}}, "sh", "-c", script)
	if out != "absent\n" {
		t.Errorf("own IPC namespace: ipcs shows %q, want no segment of the node's", out)
	}
}

func TestSysctls(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	layer := busyboxLayer(t)
	path, err := netns.Create(t.TempDir(), "pod")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Delete(path) })
	hostShm, _ := os.ReadFile("/proc/sys/kernel/shm_rmid_forced")
	out, errOut, st := runOut(t, r, skiffrt.ContainerSpec{Layers: []string{layer}, NetNSPath: path,
		Sysctls: map[string]string{"kernel.shm_rmid_forced": "1", "fs.mqueue.msg_max": "100", "net.ipv4.ip_local_port_range": "40000 50000"}},
		"cat", "/proc/sys/kernel/shm_rmid_forced", "/proc/sys/fs/mqueue/msg_max", "/proc/sys/net/ipv4/ip_local_port_range")
	if want := "1\n100\n40000\t50000\n"; out != want {
		t.Errorf("sysctls read %q (stderr %q, %+v), want %q", out, errOut, st, want)
	}
	if now, _ := os.ReadFile("/proc/sys/kernel/shm_rmid_forced"); string(now) != string(hostShm) {
		t.Errorf("the node's kernel.shm_rmid_forced changed from %q to %q", hostShm, now)
	}
	for _, tc := range []struct {
		name string
		spec skiffrt.ContainerSpec
		part string
	}{
		{"ipc sysctl with host IPC", skiffrt.ContainerSpec{HostIPC: true, Sysctls: map[string]string{"kernel.msgmax": "1"}}, "sysctls[kernel.msgmax]: an IPC sysctl"},
		{"net sysctl on the node's network", skiffrt.ContainerSpec{Sysctls: map[string]string{"net.ipv4.ip_forward": "1"}}, "sysctls[net.ipv4.ip_forward]: a network sysctl"},
		{"not namespaced", skiffrt.ContainerSpec{Sysctls: map[string]string{"vm.swappiness": "1"}}, "sysctls[vm.swappiness]: not a namespaced sysctl"},
		{"bad name", skiffrt.ContainerSpec{Sysctls: map[string]string{"../x": "1"}}, "sysctls[../x]: not a sysctl name"},
	} {
		spec := tc.spec
		spec.ID, spec.Layers, spec.Args = newID(t), []string{layer}, []string{"true"}
		if _, err := r.Create(context.Background(), spec); !errors.Is(err, skiffrt.ErrInvalidSpec) || !strings.Contains(err.Error(), tc.part) {
			t.Errorf("%s: %v, want ErrInvalidSpec saying %q", tc.name, err, tc.part)
		}
	}
}

func TestMaskedAndReadonlyPaths(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	layer := busyboxLayer(t)
	out, errOut, _ := runOut(t, r, skiffrt.ContainerSpec{Layers: []string{layer}, MaskedPaths: []string{"/etc/passwd"}, ReadonlyPaths: []string{"/tmp"}},
		"sh", "-c", "wc -c < /etc/passwd; touch /tmp/x 2>&1 | grep -o Read-only; wc -c < /proc/timer_list | grep -qv '^0$' && echo timer_list-readable")
	if want := "0\nRead-only\ntimer_list-readable\n"; out != want {
		t.Errorf("masked /etc/passwd, read-only /tmp: %q (stderr %q), want %q", out, errOut, want)
	}
	// Empty lists: nothing masked or read-only.
	out, _, _ = runOut(t, r, skiffrt.ContainerSpec{Layers: []string{layer}, MaskedPaths: []string{}, ReadonlyPaths: []string{}},
		"sh", "-c", "grep -q ' /proc/sys proc ro' /proc/mounts && echo proc-sys-ro; wc -c < /proc/timer_list | grep -qv '^0$' && echo timer_list-readable")
	if out != "timer_list-readable\n" {
		t.Errorf("no masked or read-only paths: %q, want /proc/timer_list readable and /proc/sys writable", out)
	}
}

func TestSeccompLocalhost(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	layer := busyboxLayer(t)
	blockHostname := []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["sethostname"],"action":"SCMP_ACT_ERRNO"}]}`)
	sysAdmin := []string{"SYS_ADMIN"}
	out, errOut, st := runOut(t, r, skiffrt.ContainerSpec{Layers: []string{layer}, CapAdd: sysAdmin, Seccomp: skiffrt.SeccompLocalhost, SeccompProfile: blockHostname},
		"hostname", "x")
	if st.ExitCode == 0 || !strings.Contains(errOut, "Operation not permitted") {
		t.Errorf("hostname under a profile refusing sethostname: exit %d, %q %q; want EPERM", st.ExitCode, out, errOut)
	}
	out, errOut, _ = runOut(t, r, skiffrt.ContainerSpec{Layers: []string{layer}, CapAdd: sysAdmin, Seccomp: skiffrt.SeccompUnconfined},
		"sh", "-c", "hostname x && hostname")
	if out != "x\n" {
		t.Errorf("unconfined with CAP_SYS_ADMIN: %q (stderr %q), want the hostname set", out, errOut)
	}
	// A Docker-style rule that applies only with a capability the
	// container lacks is left out.
	withCap := []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["sethostname"],"action":"SCMP_ACT_ERRNO","includes":{"caps":["CAP_BPF"]}}]}`)
	out, errOut, _ = runOut(t, r, skiffrt.ContainerSpec{Layers: []string{layer}, CapAdd: sysAdmin, Seccomp: skiffrt.SeccompLocalhost, SeccompProfile: withCap},
		"sh", "-c", "hostname y && hostname")
	if out != "y\n" {
		t.Errorf("a rule for CAP_BPF only, without it: %q (stderr %q), want the hostname set", out, errOut)
	}
	for _, tc := range []struct {
		name, profile, part string
	}{
		{"not JSON", `{`, "seccompProfile:"},
		{"unknown field", `{"defaultAction":"SCMP_ACT_ALLOW","x":1}`, "seccompProfile:"},
		{"bad default action", `{"defaultAction":"ALLOW"}`, "seccompProfile.defaultAction"},
		{"bad action", `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mount"],"action":"deny"}]}`, "seccompProfile.syscalls[0].action"},
		{"no names", `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"action":"SCMP_ACT_ERRNO"}]}`, "seccompProfile.syscalls[0].names"},
		{"bad op", `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["kill"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"EQ"}]}]}`, "seccompProfile.syscalls[0].args[0].op"},
		{"notify", `{"defaultAction":"SCMP_ACT_NOTIFY"}`, "seccompProfile.defaultAction"},
	} {
		spec := skiffrt.ContainerSpec{ID: newID(t), Layers: []string{layer}, Args: []string{"true"}, Seccomp: skiffrt.SeccompLocalhost, SeccompProfile: []byte(tc.profile)}
		if _, err := r.Create(context.Background(), spec); !errors.Is(err, skiffrt.ErrInvalidSpec) || !strings.Contains(err.Error(), tc.part) {
			t.Errorf("%s: %v, want ErrInvalidSpec naming %s", tc.name, err, tc.part)
		}
	}
}

// sharedDir is a directory bind-mounted on itself and made rshared, as
// the kubelet's volumes with propagation are; unmounted at the end.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	if err := unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestMountPropagation(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	layer := busyboxLayer(t)
	ctx := context.Background()
	exec := func(c *Container, script string) string {
		var out, errOut syncBuffer
		code, err := c.Exec(ctx, skiffrt.Process{Args: []string{"sh", "-c", script}, Stdout: &out, Stderr: &errOut})
		if err != nil || code != 0 {
			t.Errorf("exec %q: %d, %v, stderr %q", script, code, err, errOut.String())
		}
		return out.String()
	}
	for _, tc := range []struct {
		name        string
		propagation skiffrt.Propagation
		in, out     bool // the node's mount shows inside; the container's on the node
	}{
		{"rprivate", skiffrt.PropagationPrivate, false, false},
		{"rslave", skiffrt.PropagationHostToContainer, true, false},
		{"rshared", skiffrt.PropagationBidirectional, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := sharedDir(t)
			for _, d := range []string{"from-node", "from-container", "flag"} {
				os.Mkdir(filepath.Join(src, d), 0o755)
			}
			os.WriteFile(filepath.Join(src, "flag", "flagFile"), nil, 0o644)
			c := create(t, r, skiffrt.ContainerSpec{ID: newID(t), Layers: []string{layer}, Privileged: true, Args: []string{"sleep", "1000"},
				Mounts: []skiffrt.Mount{{HostPath: src, ContainerPath: "/data", Propagation: tc.propagation}}})
			if err := c.Start(ctx); err != nil {
				t.Fatal(err)
			}
			// After the start, the node mounts under the host path...
			if err := unix.Mount(filepath.Join(src, "flag"), filepath.Join(src, "from-node"), "", unix.MS_BIND, ""); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Unmount(filepath.Join(src, "from-node"), unix.MNT_DETACH) })
			if got := exec(c, "ls /data/from-node") != ""; got != tc.in {
				t.Errorf("the node's mount seen inside: %v, want %v", got, tc.in)
			}
			// ...and so does the container.
			exec(c, "mount -t tmpfs none /data/from-container && touch /data/from-container/x")
			t.Cleanup(func() { unix.Unmount(filepath.Join(src, "from-container"), unix.MNT_DETACH) })
			_, err := os.Stat(filepath.Join(src, "from-container", "x"))
			if got := err == nil; got != tc.out {
				t.Errorf("the container's mount seen on the node: %v, want %v", got, tc.out)
			}
		})
	}
	private := t.TempDir()
	for _, tc := range []struct {
		name string
		spec skiffrt.ContainerSpec
		part string
	}{
		{"host to container from a private mount", skiffrt.ContainerSpec{Mounts: []skiffrt.Mount{{HostPath: private, ContainerPath: "/d", Propagation: skiffrt.PropagationHostToContainer}}},
			"mounts[0].propagation \"rslave\": the host path " + private + " is on the node's mount"},
		{"bidirectional without privileges", skiffrt.ContainerSpec{Mounts: []skiffrt.Mount{{HostPath: sharedDir(t), ContainerPath: "/d", Propagation: skiffrt.PropagationBidirectional}}},
			"mounts[0].propagation \"rshared\": bidirectional propagation needs a privileged container"},
	} {
		spec := tc.spec
		spec.ID, spec.Layers, spec.Args = newID(t), []string{layer}, []string{"true"}
		if _, err := r.Create(ctx, spec); !errors.Is(err, skiffrt.ErrInvalidSpec) || !strings.Contains(err.Error(), tc.part) {
			t.Errorf("%s: %v, want ErrInvalidSpec saying %q", tc.name, err, tc.part)
		}
	}
}
