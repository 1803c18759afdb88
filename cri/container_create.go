package cri

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffrt "skiff.dev/skiff/runtime"
	"skiff.dev/skiff/runtime/image"
)

// CreateContainer creates a container in a ready sandbox: it resolves the
// image in the node's store, builds argv (command+args when command is set,
// else [container name]+args) and the environment, opens the log file and
// has the runtime compile the module. A module that does not compile is
// InvalidArgument with the runtime's reason. On error nothing is left
// behind. Mounts of host directories become WASI preopens or bind mounts
// (mounts.go); settings the container's runtime cannot honour (for Wasm:
// privileged, added capabilities, host PID or IPC namespaces, Localhost
// profiles, mount propagation, ...; for any: devices, SELinux labels) are
// InvalidArgument naming the field (validate.go). An OCI container's
// security context is honoured as containerd does (oci.go).
//
// Resources: linux.resources.memory_limit_in_bytes caps the module's linear
// memory (0: the node's default); the annotation skiff.dev/cpu-time-budget
// (a Go duration, e.g. "10s") kills the container once it has used that
// much CPU time, reason CPUBudgetExceeded. CPU quota and period throttle
// the module's thread where the node can (runtime/wasm's CPULimits); CPU
// shares are accepted and not enforced (see README "Resources").
func (s *service) CreateContainer(ctx context.Context, req *runtime.CreateContainerRequest) (*runtime.CreateContainerResponse, error) {
	cfg := req.GetConfig()
	name := cfg.GetMetadata().GetName()
	if name == "" {
		return nil, fmt.Errorf("create container: %w: config.metadata.name is required", errInvalidArgument)
	}
	ref := cfg.GetImage().GetImage()
	if ref == "" {
		return nil, fmt.Errorf("create container %q: %w: config.image.image is required", name, errInvalidArgument)
	}
	sb, err := s.getSandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, fmt.Errorf("create container %q: %w", name, err)
	}
	sbRec := sb.snapshot()
	if sbRec.State != sandboxReady {
		return nil, fmt.Errorf("create container %q: %w: sandbox %s is not ready", name, errFailedPrecondition, sbRec.ID)
	}
	img, err := s.images.Get(ref)
	if errors.Is(err, image.ErrNotFound) {
		return nil, fmt.Errorf("create container %q: %w: image %q is not in the node's image store; import it with `skiff image import`", name, errNotFound, ref)
	}
	if err != nil {
		return nil, fmt.Errorf("create container %q: %w", name, err)
	}
	handler, err := s.containerHandler(&sbRec, ref, img)
	if err != nil {
		return nil, fmt.Errorf("create container %q: %w", name, err)
	}
	if err := validateContainerConfig(cfg, &sbRec, handler); err != nil {
		return nil, fmt.Errorf("create container %q: %w", name, err)
	}
	mounts, err := mountsOf(cfg.GetMounts(), handler == HandlerRunc, cfg.GetLinux().GetSecurityContext().GetPrivileged())
	if err != nil {
		return nil, fmt.Errorf("create container %q: %w", name, err)
	}
	if err := resolveImageMounts(s.images, mounts); err != nil {
		return nil, fmt.Errorf("create container %q: %w", name, err)
	}

	rec := containerRecord{
		ID:                 newID(),
		SandboxID:          sbRec.ID,
		Name:               name,
		Attempt:            cfg.GetMetadata().GetAttempt(),
		Image:              ref,
		UserSpecifiedImage: cfg.GetImage().GetUserSpecifiedImage(),
		ImageID:            img.ID,
		RuntimeHandler:     handler,
		Labels:             copyMap(cfg.GetLabels()),
		Annotations:        copyMap(cfg.GetAnnotations()),
		Args:               argv(name, cfg.GetCommand(), cfg.GetArgs()),
		Mounts:             mounts,
		Stdin:              cfg.GetStdin(),
		StdinOnce:          cfg.GetStdin() && cfg.GetStdinOnce(),
		TTY:                cfg.GetTty(),
		State:              containerCreated,
		CreatedAt:          s.now().UnixNano(),
	}
	if rec.MemoryLimit, err = memoryLimit(cfg.GetLinux().GetResources()); err != nil {
		return nil, fmt.Errorf("create container %q: %w", name, err)
	}
	if rec.CPUQuota, rec.CPUPeriod, err = cpuLimit(cfg.GetLinux().GetResources()); err != nil {
		return nil, fmt.Errorf("create container %q: %w", name, err)
	}
	if _, err := cpuBudget(rec.Annotations); err != nil {
		return nil, fmt.Errorf("create container %q: %w", name, err)
	}
	if rec.Ports, err = containerPorts(rec.Annotations); err != nil {
		return nil, fmt.Errorf("create container %q: %w", name, err)
	}
	if handler == HandlerRunc {
		if rec.OCI, err = ociSettings(cfg); err != nil {
			return nil, fmt.Errorf("create container %q: %w", name, err)
		}
		if rec.Args, err = ociImageDefaults(&rec, cfg, img); err != nil {
			return nil, fmt.Errorf("create container %q: %w", name, err)
		}
	}
	if rec.UserSpecifiedImage == "" {
		rec.UserSpecifiedImage = ref
	}
	if err := s.images.Touch(img.ID); err != nil {
		s.log.Warn("mark image used", "image", img.ID, "err", err)
	}
	for _, m := range mounts {
		if m.ImageID != "" && m.ImageID != img.ID {
			if err := s.images.Touch(m.ImageID); err != nil {
				s.log.Warn("mark image used", "image", m.ImageID, "err", err)
			}
		}
	}
	for _, kv := range cfg.GetEnvs() {
		if kv.GetKey() == "" {
			return nil, fmt.Errorf("create container %q: %w: environment variable with an empty key", name, errInvalidArgument)
		}
		rec.Env = setEnv(rec.Env, kv.GetKey()+"="+string(kv.GetValue()))
	}
	if sbRec.LogDirectory != "" && cfg.GetLogPath() != "" {
		p, err := logPath(sbRec.LogDirectory, cfg.GetLogPath())
		if err != nil {
			return nil, fmt.Errorf("create container %q: %w", name, err)
		}
		rec.LogPath = p
	}
	log := s.log.With("container", rec.ID, "sandbox", rec.SandboxID, "pod", sbRec.Namespace+"/"+sbRec.Name)

	if err := s.reserve(rec.nameKey(), rec.ID); err != nil {
		return nil, fmt.Errorf("create container %q (attempt %d) in sandbox %s: %w", name, rec.Attempt, rec.SandboxID, err)
	}
	c := &container{rec: rec}
	var undo []func()
	fail := func(err error) (*runtime.CreateContainerResponse, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		s.release(rec.nameKey(), rec.ID)
		return nil, fmt.Errorf("create container %q: %w", name, err)
	}
	if rec.LogPath != "" {
		l, created, err := openContainerLog(rec.LogPath, s.now, s.logs)
		if err != nil {
			return fail(err)
		}
		c.log = l
		undo = append(undo, func() {
			l.Close()
			if created {
				os.Remove(rec.LogPath)
			}
		})
	}
	rt, err := s.runtimeOf(&rec)
	if err != nil {
		return fail(err)
	}
	spec, err := s.taskSpec(&rec, &sbRec, img, c.log)
	if err != nil {
		return fail(err)
	}
	t, err := rt.Create(ctx, spec)
	if err != nil {
		return fail(err)
	}
	c.task = t
	undo = append(undo, func() {
		t.Stop(context.WithoutCancel(ctx), 0)
		t.Remove(context.WithoutCancel(ctx))
	})
	if err := s.db.putContainer(&rec); err != nil {
		return fail(err)
	}
	undo = append(undo, func() { s.db.deleteContainer(rec.ID) })

	// Insert only while the sandbox is still ready: StopPodSandbox marks
	// it NotReady before it collects the containers to stop.
	s.mu.Lock()
	sb.mu.Lock()
	ready := sb.rec.State == sandboxReady && !sb.removing
	if ready {
		s.containers[rec.ID] = c
	}
	sb.mu.Unlock()
	s.mu.Unlock()
	if !ready {
		return fail(fmt.Errorf("%w: sandbox %s stopped while the container was being created", errFailedPrecondition, rec.SandboxID))
	}
	s.emit(runtime.ContainerEventType_CONTAINER_CREATED_EVENT, rec.ID, rec.SandboxID)
	log.Info("container created", "image", ref, "args", rec.Args)
	return &runtime.CreateContainerResponse{ContainerId: rec.ID}, nil
}

// argv is what a Wasm container sees as its arguments.
func argv(name string, command, args []string) []string {
	if len(command) > 0 {
		return append(append([]string{}, command...), args...)
	}
	return append([]string{name}, args...)
}

// logPath joins the sandbox log directory and the container's relative log
// path, refusing a path that leaves the directory.
func logPath(dir, rel string) (string, error) {
	p := filepath.Join(dir, rel)
	if p != filepath.Clean(dir) && !strings.HasPrefix(p, filepath.Clean(dir)+string(filepath.Separator)) {
		return "", fmt.Errorf("%w: log_path %q leaves the sandbox log directory", errInvalidArgument, rel)
	}
	return p, nil
}

// taskSpec is the runtime's view of a container.
func (s *service) taskSpec(rec *containerRecord, sb *sandboxRecord, img image.Image, l *containerLog) (skiffrt.ContainerSpec, error) {
	spec := skiffrt.ContainerSpec{
		ID:        rec.ID,
		ImageID:   img.ID,
		Args:      rec.Args,
		Env:       rec.Env,
		Mounts:    runtimeMounts(rec.Mounts),
		NetNSPath: sb.NetNSPath,
		Hostname:  sb.Hostname,
		Stdin:     rec.Stdin,
		StdinOnce: rec.StdinOnce,
		TTY:       rec.TTY,
	}
	if o := rec.OCI; o != nil {
		layers, err := s.images.Layers(img)
		if err != nil {
			return spec, err
		}
		spec.Layers = layers
		if spec.ImageMounts, err = s.imageMounts(rec.Mounts); err != nil {
			return spec, err
		}
		files, err := s.sandboxMounts(sb, spec.Mounts, o.ReadOnlyRootfs)
		if err != nil {
			return spec, err
		}
		spec.Mounts = append(spec.Mounts, files...)
		applyOCI(&spec, o, sb)
		if spec.PIDNamespace, err = podPIDNamespace(o, sb); err != nil {
			return spec, err
		}
	} else {
		spec.ImagePath = s.images.BlobPath(img)
	}
	if rec.MemoryLimit > 0 {
		spec.MemoryLimit = uint64(rec.MemoryLimit)
	}
	spec.CPUBudget, _ = cpuBudget(rec.Annotations) // checked at create
	spec.CPUQuota = time.Duration(rec.CPUQuota) * time.Microsecond
	spec.CPUPeriod = time.Duration(rec.CPUPeriod) * time.Microsecond
	if len(rec.Ports) > 0 {
		nsPath := sb.NetNSPath // empty for a pod on the node's network
		spec.Ports = rec.Ports
		spec.Listen = func(port int) (*os.File, error) { return s.namespaces.Listen(nsPath, port) }
	}
	if l != nil {
		spec.Stdout = l.stream("stdout")
		spec.Stderr = l.stream("stderr")
	}
	return spec, nil
}

// applyOCI sets what only an OCI container has in spec: the settings of
// its record and the sysctls of its sandbox.
func applyOCI(spec *skiffrt.ContainerSpec, o *ociRecord, sb *sandboxRecord) {
	spec.WorkingDir = o.WorkingDir
	spec.User = o.User
	spec.AdditionalGIDs = o.AdditionalGIDs
	spec.ReadOnlyRootfs = o.ReadOnlyRootfs
	spec.CapAdd, spec.CapDrop = o.CapAdd, o.CapDrop
	spec.NoNewPrivileges = o.NoNewPrivileges
	spec.Seccomp, spec.SeccompProfile = o.Seccomp, o.SeccompProfile
	spec.Privileged, spec.HostPID, spec.HostIPC = o.Privileged, o.HostPID, o.HostIPC
	spec.MaskedPaths, spec.ReadonlyPaths = o.MaskedPaths, o.ReadonlyPaths
	spec.Sysctls = sb.Sysctls
	spec.OOMScoreAdj = o.OOMScoreAdj
	spec.CPUShares = o.CPUShares
}

// AnnotationCPUTimeBudget names the container annotation that sets a CPU
// time budget: a Go duration ("10s", "1m30s"), at least 1ms. The node agent
// copies it from the pod's annotations.
const AnnotationCPUTimeBudget = "skiff.dev/cpu-time-budget"

// memoryLimit returns the memory limit of a container's resources, in
// bytes (0: none set).
func memoryLimit(res *runtime.LinuxContainerResources) (int64, error) {
	n := res.GetMemoryLimitInBytes()
	switch {
	case n < 0:
		return 0, fmt.Errorf("%w: linux.resources.memory_limit_in_bytes %d is negative", errInvalidArgument, n)
	case n > 0 && n < 64<<10:
		return 0, fmt.Errorf("%w: linux.resources.memory_limit_in_bytes %d is less than one WebAssembly page (64Ki)", errInvalidArgument, n)
	}
	return n, nil
}

// cpuLimit returns the CFS quota and period of a container's resources,
// in microseconds (0: none, and the default period): the guest's thread
// is throttled to quota per period.
func cpuLimit(res *runtime.LinuxContainerResources) (quota, period int64, err error) {
	quota, period = res.GetCpuQuota(), res.GetCpuPeriod()
	if quota < 0 {
		quota = 0 // -1: no limit, as for the kernel
	}
	if quota > 0 && quota < 1000 {
		return 0, 0, fmt.Errorf("%w: linux.resources.cpu_quota %d is under the kernel's floor of 1000 (1ms)", errInvalidArgument, quota)
	}
	if period != 0 && (period < 1000 || period > 1_000_000) {
		return 0, 0, fmt.Errorf("%w: linux.resources.cpu_period %d is not between 1000 and 1000000 (1ms and 1s)", errInvalidArgument, period)
	}
	return quota, period, nil
}

// cpuBudget returns the CPU time budget the annotations set (0: none).
func cpuBudget(annotations map[string]string) (time.Duration, error) {
	v, ok := annotations[AnnotationCPUTimeBudget]
	if !ok {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Millisecond {
		return 0, fmt.Errorf("%w: annotation %s: %q is not a duration of at least 1ms (e.g. \"10s\")", errInvalidArgument, AnnotationCPUTimeBudget, v)
	}
	return d, nil
}
