package cri

import (
	"context"
	"errors"
	"fmt"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/runtime/pidns"
)

// A pod-wide PID namespace (CRI namespace_options.pid POD) is held by a
// holder process (runtime/pidns), PID 1 of the namespace and named pause,
// as containerd's pause container holds it. A sandbox gets one when its
// config asks for it explicitly: namespace_options is set and its pid is
// POD (POD is the zero value, so a config without namespace_options, as
// crictl's and skiff's agent's, gets none; the kubelet sends CONTAINER
// but for shareProcessNamespace pods), and the sandbox may hold OCI
// containers (Wasm modules have no processes to share). Each OCI
// container of the sandbox whose own pid mode is POD joins it; CONTAINER
// and NODE keep their meaning. The holder outlives the node process as
// the containers do: the sandbox record keeps its pid, start time and
// namespace, and a restarted node checks them (pidns.Check) before it
// trusts the pid. StopPodSandbox ends the holder, and with it any process
// left in the namespace.

// wantsPodPID reports whether a sandbox config asks explicitly for a
// pod-wide PID namespace.
func wantsPodPID(cfg *runtime.PodSandboxConfig) bool {
	ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	return ns != nil && ns.GetPid() == runtime.NamespaceMode_POD
}

// startPIDHolder starts the holder of rec's PID namespace and records it.
// The returned undo ends it.
func startPIDHolder(ctx context.Context, rec *sandboxRecord) (undo func(), err error) {
	h, err := pidns.Start(ctx)
	if err != nil {
		return nil, fmt.Errorf("pod PID namespace: %w", err)
	}
	rec.PIDHolder = &h
	return func() { pidns.Stop(context.WithoutCancel(ctx), h) }, nil
}

// podPIDNamespace is the PID namespace an OCI container with settings o
// joins in sandbox sb: its holder's, when the sandbox has one and the
// container's pid mode is POD; else none (one of its own, or the node's).
// A holder that is gone is FailedPrecondition: the container would
// otherwise get a namespace of its own without a word.
func podPIDNamespace(o *ociRecord, sb *sandboxRecord) (string, error) {
	if sb.PIDHolder == nil || !o.PodPID || o.HostPID {
		return "", nil
	}
	if err := pidns.Check(*sb.PIDHolder); err != nil {
		return "", fmt.Errorf("%w: sandbox %s has lost its PID namespace: %v", errFailedPrecondition, sb.ID, err)
	}
	return sb.PIDHolder.Path(), nil
}

// stopPIDHolder ends the holder of sandbox record rec, if it has one, and
// forgets it. It may wait seconds: the caller owns rec (a copy, not under
// the sandbox's lock).
func stopPIDHolder(ctx context.Context, rec *sandboxRecord) error {
	if rec.PIDHolder == nil {
		return nil
	}
	if err := pidns.Stop(ctx, *rec.PIDHolder); err != nil {
		return fmt.Errorf("stop pod PID namespace: %w", err)
	}
	rec.PIDHolder = nil
	return nil
}

// pidHolderLost reports whether a ready sandbox's PID namespace holder is
// gone (a restarted node checks it).
func pidHolderLost(rec *sandboxRecord) bool {
	return rec.PIDHolder != nil && errors.Is(pidns.Check(*rec.PIDHolder), pidns.ErrGone)
}
