package cri

import (
	"context"
	"fmt"
	"log/slog"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/netns"
)

// RunPodSandbox creates a pod sandbox: a pinned network namespace with
// loopback up (none for a pod on the node's network), attached to the pod
// network, the holder of its PID namespace when its config asks for one
// (namespace_options.pid POD, sandbox_pid.go), and its record. The
// runtime handler must be one the node has
// (Config.Runtimes), or empty: then each container runs in the handler of
// its image's kind (Wasm or OCI), so one pod may mix both.
// Settings no runtime here honours (user namespaces, SELinux labels,
// AppArmor profiles), and in a Wasm sandbox those only OCI containers
// honour (privileged, host PID or IPC namespaces, sysctls, Localhost
// seccomp profiles), are InvalidArgument naming the field (validate.go).
// Sysctls must be of the pod's own IPC or network namespace; they apply to
// each OCI container of the sandbox. A pod with its own network namespace
// needs the pod network ready (Status NetworkReady); otherwise the call is
// FailedPrecondition "pod network not ready: <reason>".
// On error nothing is left behind.
func (s *service) RunPodSandbox(ctx context.Context, req *runtime.RunPodSandboxRequest) (*runtime.RunPodSandboxResponse, error) {
	cfg := req.GetConfig()
	md := cfg.GetMetadata()
	if md.GetName() == "" {
		return nil, fmt.Errorf("run pod sandbox: %w: config.metadata.name is required", errInvalidArgument)
	}
	pod := md.GetNamespace() + "/" + md.GetName()
	handler, err := s.handler(req.GetRuntimeHandler())
	if err != nil {
		return nil, fmt.Errorf("run pod sandbox %s: %w", pod, err)
	}
	_, haveRunc := s.runtimes[HandlerRunc]
	oci := handler == HandlerRunc || handler == "" && haveRunc
	if err := validateSandboxConfig(cfg, oci); err != nil {
		return nil, fmt.Errorf("run pod sandbox %s: %w", pod, err)
	}
	rec := sandboxRecord{
		ID:             newID(),
		Name:           md.GetName(),
		Namespace:      md.GetNamespace(),
		UID:            md.GetUid(),
		Attempt:        md.GetAttempt(),
		Labels:         copyMap(cfg.GetLabels()),
		Annotations:    copyMap(cfg.GetAnnotations()),
		LogDirectory:   cfg.GetLogDirectory(),
		Hostname:       cfg.GetHostname(),
		RuntimeHandler: handler,
		HostNetwork:    cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() == runtime.NamespaceMode_NODE,
		Privileged:     cfg.GetLinux().GetSecurityContext().GetPrivileged(),
		Sysctls:        copyMap(cfg.GetLinux().GetSysctls()),
		State:          sandboxReady,
		CreatedAt:      s.now().UnixNano(),
	}
	if rec.HostPorts, err = hostPorts(cfg, rec.HostNetwork); err != nil {
		return nil, fmt.Errorf("run pod sandbox %s: %w", pod, err)
	}
	// Written by the first OCI container (sandbox_files.go).
	if rec.Files, err = sandboxFileContents(cfg, rec.HostNetwork); err != nil {
		return nil, fmt.Errorf("run pod sandbox %s: %w", pod, err)
	}
	if !rec.HostNetwork {
		if ok, reason := s.network.Ready(); !ok {
			return nil, fmt.Errorf("run pod sandbox %s: %w: %s", pod, netns.ErrNotReady, reason)
		}
	}
	log := s.log.With("pod", pod, "sandbox", rec.ID)

	if err := s.reserve(rec.nameKey(), rec.ID); err != nil {
		return nil, fmt.Errorf("run pod sandbox %s (attempt %d): %w", pod, rec.Attempt, err)
	}
	var undo []func()
	fail := func(err error) (*runtime.RunPodSandboxResponse, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		s.release(rec.nameKey(), rec.ID)
		return nil, fmt.Errorf("run pod sandbox %s: %w", pod, err)
	}

	if !rec.HostNetwork {
		if err := s.attach(ctx, &rec, &undo, log); err != nil {
			return fail(err)
		}
	}
	if oci && wantsPodPID(cfg) {
		stop, err := startPIDHolder(ctx, &rec)
		if err != nil {
			return fail(err)
		}
		undo = append(undo, stop)
	}
	if len(rec.HostPorts) > 0 {
		proxy, err := serveHostPorts(rec.HostPorts, rec.NetNSPath, dialInNamespace)
		if err != nil {
			return fail(fmt.Errorf("%w: %w", errFailedPrecondition, err))
		}
		undo = append(undo, proxy.close)
		s.setHostPorts(rec.ID, proxy)
		undo = append(undo, func() { s.setHostPorts(rec.ID, nil) })
	}
	if err := s.db.putSandbox(&rec); err != nil {
		return fail(err)
	}
	s.mu.Lock()
	s.sandboxes[rec.ID] = &sandbox{rec: rec}
	s.mu.Unlock()
	log.Info("pod sandbox ready", "netns", rec.NetNSPath)
	return &runtime.RunPodSandboxResponse{PodSandboxId: rec.ID}, nil
}

// attach gives the sandbox a network namespace attached to the pod
// network: a spare attached ahead under an ID of its own (rec.CNIID) when
// one is ready, else one made and attached (CNI ADD) now, under the
// sandbox's ID. It sets rec's NetNSPath, CNIID and IPs and pushes onto
// undo what undoes it.
func (s *service) attach(ctx context.Context, rec *sandboxRecord, undo *[]func(), log *slog.Logger) error {
	if s.attached != nil {
		a, ok, err := s.attached.Take(rec.ID)
		if err != nil {
			return err
		}
		if ok {
			rec.NetNSPath, rec.CNIID, rec.IPs = a.Path, a.ID, a.Result.IPs
			*undo = append(*undo, func() {
				if err := s.network.Teardown(context.WithoutCancel(ctx), a.ID, a.Path); err != nil {
					log.Error("tear down network of failed sandbox", "err", err)
					return // the claim stays for the orphan cleanup at the next start
				}
				if err := s.namespaces.Delete(a.Path); err != nil {
					log.Error("delete network namespace of failed sandbox", "err", err)
				}
				s.attached.Release(rec.ID)
			})
			return nil
		}
	}
	path, err := s.namespaces.Create(rec.ID)
	if err != nil {
		return err
	}
	rec.NetNSPath = path
	*undo = append(*undo, func() {
		if err := s.namespaces.Delete(path); err != nil {
			log.Error("delete network namespace of failed sandbox", "err", err)
		}
	})
	// The pod network (CNI ADD), once the namespace exists.
	res, err := s.network.Setup(ctx, rec.ID, path)
	if err != nil {
		return fmt.Errorf("set up pod network: %w", err)
	}
	rec.IPs = res.IPs
	*undo = append(*undo, func() {
		if err := s.network.Teardown(context.WithoutCancel(ctx), rec.ID, path); err != nil {
			log.Error("tear down network of failed sandbox", "err", err)
		}
	})
	return nil
}
