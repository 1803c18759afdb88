package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	skiffrt "skiff.dev/skiff/runtime"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// maxMountData is what the kernel takes of a mount's options (a page).
const maxMountData = 4095

// Create makes the container's bundle and runs `runc create`: the
// container's init then waits for Start. The bundle is <Root>/bundles/<id>:
// an overlayfs rootfs over spec.Layers with a writable layer of its own,
// config.json, and the FIFOs of its output. Bad input is refused with an
// error wrapping runtime.ErrInvalidSpec naming the field; on any error
// nothing is left behind.
func (r *Runtime) Create(ctx context.Context, spec skiffrt.ContainerSpec) (skiffrt.Container, error) {
	c, err := r.create(ctx, spec)
	if err != nil {
		return nil, err // not a nil *Container in an interface
	}
	return c, nil
}

func (r *Runtime) create(ctx context.Context, spec skiffrt.ContainerSpec) (*Container, error) {
	if err := validate(&spec); err != nil {
		return nil, fmt.Errorf("create container %s: %w", spec.ID, err)
	}
	if err := checkHostPaths(&spec); err != nil {
		return nil, fmt.Errorf("create container %s: %w", spec.ID, err)
	}
	if err := validateImageMounts(&spec); err != nil {
		return nil, fmt.Errorf("create container %s: %w", spec.ID, err)
	}
	c := newContainer(r, spec, cgroupsPath(r.cgroupParent, spec.ID))
	if err := r.track(c); err != nil {
		return nil, fmt.Errorf("create container %s: %w", spec.ID, err)
	}
	undo := []func(){func() { r.untrack(c) }}
	fail := func(err error) (*Container, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return nil, fmt.Errorf("create container %s: %w", spec.ID, err)
	}

	if err := os.Mkdir(c.bundle, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fail(fmt.Errorf("%w: its bundle %s exists (adopt or remove it)", skiffrt.ErrState, c.bundle))
		}
		return fail(err)
	}
	undo = append(undo, func() {
		if err := os.RemoveAll(c.bundle); err != nil {
			c.log.Error("remove the bundle of a failed container", "err", err)
		}
	})
	rootfs := filepath.Join(c.bundle, "rootfs")
	if err := mountRootfs(c.bundle, spec.Layers); err != nil {
		return fail(err)
	}
	undo = append(undo, func() {
		if err := unmount(rootfs); err != nil {
			c.log.Error("unmount the rootfs of a failed container", "err", err)
		}
	})

	imageBinds, err := mountImageVolumes(c.bundle, &spec)
	if err != nil {
		return fail(err)
	}
	undo = append(undo, func() {
		if err := unmountImageVolumes(c.bundle); err != nil {
			c.log.Error("unmount the image volumes of a failed container", "err", err)
		}
	})
	spec.Mounts = append(slices.Clip(spec.Mounts), imageBinds...)

	user, err := resolveUser(rootfs, spec.User, spec.AdditionalGIDs)
	if err != nil {
		return fail(err)
	}
	var devices []specs.LinuxDevice
	if spec.Privileged {
		if devices, err = hostDevices(); err != nil {
			return fail(err)
		}
	}
	s := ociSpec(&spec, user, c.cg.path, nodeLimits{minOOM: r.minOOMScore, capBnd: r.capBnd}, devices)
	if lost := lostCaps(&spec, r.capBnd); len(lost) > 0 {
		c.log.Warn("capabilities the node process lacks are not given", "caps", lost)
	}
	withTerminal(s.Process, spec.TTY)
	c.proc = *s.Process
	config, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(c.bundle, "config.json"), config, 0o600); err != nil {
		return fail(err)
	}

	stdio, err := makeFIFOs(c.bundle)
	if err != nil {
		return fail(err)
	}
	undo = append(undo, stdio.closeAll)
	in, err := openInput(c.bundle, &spec, r.root)
	if err != nil {
		return fail(err)
	}
	undo = append(undo, in.close)

	// Until the watcher claims the init, the reaper leaves unclaimed inits be.
	release := r.reaper.hold()
	defer release()
	logPath := filepath.Join(c.bundle, "runc-create.log")
	pidPath := filepath.Join(c.bundle, "init.pid")
	args := []string{"--log", logPath, "--log-format", "json", "create", "--bundle", c.bundle, "--pid-file", pidPath}
	if in.console != nil {
		args = append(args, "--console-socket", in.console.path)
	}
	cmd, cancel := r.command(ctx, append(args, spec.ID)...)
	cmd.Stdout, cmd.Stderr = stdio.wout, stdio.werr
	if in.ctr != nil {
		cmd.Stdin = in.ctr
	}
	err = cmd.Run()
	cancel()
	undo = append(undo, func() {
		dctx, cancel := context.WithTimeout(context.Background(), r.callTimeout)
		defer cancel()
		if _, err := r.call(dctx, "delete", "--force", spec.ID); err != nil && !notExist(err) {
			c.log.Error("delete a failed container", "err", err)
		}
		c.cg.remove()
	})
	if err != nil {
		msg := logMessage(logPath)
		if strings.Contains(msg, "executable file not found") || strings.Contains(msg, "no such file or directory") && strings.Contains(msg, "exec") {
			return fail(invalid("args[0] %q: %s", spec.Args[0], msg))
		}
		if msg == "" {
			return fail(fmt.Errorf("runc create: %w", err))
		}
		return fail(fmt.Errorf("runc create: %s", msg))
	}
	os.Remove(logPath)
	if err := in.receiveTerminal(); err != nil {
		return fail(err)
	}
	b, err := os.ReadFile(pidPath)
	if err != nil {
		return fail(fmt.Errorf("read the init's pid: %w", err))
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fail(fmt.Errorf("read the init's pid: %w", err))
	}
	p, err := openPidfd(pid)
	if err != nil {
		return fail(err)
	}
	r.reaper.claim(pid)
	release()
	stdio.wout.Close()
	stdio.werr.Close()

	c.mu.Lock()
	c.pidfd = p
	c.oomBase = c.cg.oomKills()
	c.status = skiffrt.Status{State: skiffrt.StateCreated}
	stdin, term := in.keep()
	c.att.mu.Lock()
	c.att.stdin, c.att.term = stdin, term
	c.att.mu.Unlock()
	c.copyOutput(stdio.rout, stdio.rerr, term)
	c.mu.Unlock()
	go c.watch(p, pid)
	c.log.Debug("container created", "pid", pid)
	return c, nil
}

// checkHostPaths checks that the layers and the mounts' sources exist,
// and that the node's mounts under those with propagation pass mount
// events on.
func checkHostPaths(spec *skiffrt.ContainerSpec) error {
	for i, l := range spec.Layers {
		if fi, err := os.Stat(l); err != nil || !fi.IsDir() {
			return invalid("layers[%d] %q: not a directory", i, l)
		}
	}
	var mountinfo []byte
	for i, m := range spec.Mounts {
		if _, err := os.Stat(m.HostPath); err != nil {
			return invalid("mounts[%d].hostPath %q: %v", i, m.HostPath, errors.Unwrap(err))
		}
		if m.Propagation == skiffrt.PropagationPrivate {
			continue
		}
		if mountinfo == nil {
			var err error
			if mountinfo, err = os.ReadFile("/proc/self/mountinfo"); err != nil {
				return fmt.Errorf("read the node's mounts: %w", err)
			}
		}
		if err := checkPropagation(i, m, mountinfo); err != nil {
			return err
		}
	}
	return nil
}

// lostCaps are the capabilities spec names (not "ALL") that the node
// process lacks, which the container does not get.
func lostCaps(spec *skiffrt.ContainerSpec, bnd uint64) []string {
	if spec.Privileged {
		return nil
	}
	var lost []string
	for _, a := range spec.CapAdd {
		if n, ok := capName(a); ok && len(clampCaps([]string{n}, bnd)) == 0 {
			lost = append(lost, n)
		}
	}
	return lost
}

// mountRootfs mounts <bundle>/rootfs: overlayfs with layers (lowest first)
// under <bundle>/upper.
func mountRootfs(bundle string, layers []string) error {
	for _, d := range []string{"rootfs", "upper", "work"} {
		if err := os.Mkdir(filepath.Join(bundle, d), 0o755); err != nil {
			return err
		}
	}
	lower := slices.Clone(layers)
	slices.Reverse(lower) // overlayfs lists the top first
	data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s",
		strings.Join(lower, ":"), filepath.Join(bundle, "upper"), filepath.Join(bundle, "work"))
	if len(data) > maxMountData {
		return invalid("layers: %d layers make mount options of %d bytes, past the kernel's %d", len(layers), len(data), maxMountData)
	}
	rootfs := filepath.Join(bundle, "rootfs")
	if err := unix.Mount("overlay", rootfs, "overlay", 0, data); err != nil {
		return fmt.Errorf("mount the rootfs: %w", err)
	}
	// Private, so that no mount the container makes in it (its /proc,
	// its /dev, with a root propagation of rshared) shows on the node.
	if err := unix.Mount("", rootfs, "", unix.MS_PRIVATE, ""); err != nil {
		unmount(rootfs)
		return fmt.Errorf("make the rootfs private: %w", err)
	}
	return nil
}

// unmount unmounts path if it is mounted.
func unmount(path string) error {
	err := unix.Unmount(path, 0)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(path, unix.MNT_DETACH)
	}
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil // not (or no longer) a mount point
	}
	return fmt.Errorf("unmount %s: %w", path, err)
}

// fifos are a container's output FIFOs: the ends the container holds
// (read-write, so that it never meets a broken pipe while no node process
// reads; the FIFO buffers) and the node's read ends.
type fifos struct{ wout, werr, rout, rerr *os.File }

func makeFIFOs(bundle string) (*fifos, error) {
	f := &fifos{}
	for _, name := range []string{"stdout", "stderr"} {
		if err := unix.Mkfifo(filepath.Join(bundle, name), 0o600); err != nil {
			return nil, fmt.Errorf("make the %s FIFO: %w", name, err)
		}
	}
	var err error
	// The read-write ends first: a non-blocking read end with no writer
	// would read end of file.
	if f.wout, err = os.OpenFile(filepath.Join(bundle, "stdout"), os.O_RDWR, 0); err == nil {
		f.werr, err = os.OpenFile(filepath.Join(bundle, "stderr"), os.O_RDWR, 0)
	}
	if err == nil {
		f.rout, f.rerr, err = openFIFOReaders(bundle)
	}
	if err != nil {
		f.closeAll()
		return nil, fmt.Errorf("open the output FIFOs: %w", err)
	}
	return f, nil
}

// openFIFOReaders opens the read ends of a bundle's FIFOs, non-blocking
// (through Go's poller, so that Close interrupts a read).
func openFIFOReaders(bundle string) (stdout, stderr *os.File, err error) {
	stdout, err = os.OpenFile(filepath.Join(bundle, "stdout"), os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	stderr, err = os.OpenFile(filepath.Join(bundle, "stderr"), os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		stdout.Close()
		return nil, nil, err
	}
	return stdout, stderr, nil
}

func (f *fifos) closeAll() {
	for _, x := range []*os.File{f.wout, f.werr, f.rout, f.rerr} {
		if x != nil {
			x.Close()
		}
	}
}
