package cri

import (
	"context"
	"fmt"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffrt "skiff.dev/skiff/runtime"
	"skiff.dev/skiff/runtime/image"
)

// The runtime handlers skiff knows, by the kind of image they run.
const (
	HandlerWasm = "wasm" // WebAssembly modules, runtime/wasm
	HandlerRunc = "runc" // OCI container images, runtime/oci
)

// handler checks a sandbox's runtime handler: one the node has, or empty,
// in which case each container runs in the handler of its image's kind.
func (s *service) handler(name string) (string, error) {
	if name == "" {
		return "", nil
	}
	if _, ok := s.runtimes[name]; !ok {
		return "", fmt.Errorf("%w: runtime handler %q is not available on this node (available: %q)", errInvalidArgument, name, sortedKeys(s.runtimes))
	}
	return name, nil
}

// imageHandler is the handler that runs an image of img's kind.
func imageHandler(img image.Image) string {
	if img.MediaType == image.MediaTypeWasm {
		return HandlerWasm
	}
	return HandlerRunc
}

// containerHandler resolves the handler a container of image img runs in,
// in sandbox sb: the sandbox's (its pod's runtimeClassName), which must be
// able to run the image, or, when the sandbox names none, the image's.
func (s *service) containerHandler(sb *sandboxRecord, ref string, img image.Image) (string, error) {
	want := imageHandler(img)
	kind := "an OCI container image"
	if want == HandlerWasm {
		kind = "a WebAssembly module"
	}
	if sb.RuntimeHandler != "" && sb.RuntimeHandler != want {
		return "", fmt.Errorf("%w: image %q is %s, which the sandbox's runtime handler %q cannot run; run it in handler %q (runtimeClassName: %s) or name no handler", errInvalidArgument, ref, kind, sb.RuntimeHandler, want, want)
	}
	if _, ok := s.runtimes[want]; !ok {
		hint := ""
		if want == HandlerRunc {
			hint = "; the node offers runc once the runc binary is installed (Debian package runc)"
		}
		return "", fmt.Errorf("%w: image %q is %s, and this node has no %q runtime (available: %q)%s", errFailedPrecondition, ref, kind, want, sortedKeys(s.runtimes), hint)
	}
	return want, nil
}

// runtimeOf is the runtime of a container's handler.
func (s *service) runtimeOf(rec *containerRecord) (skiffrt.Runtime, error) {
	rt, ok := s.runtimes[rec.handler()]
	if !ok {
		return nil, fmt.Errorf("%w: container %s runs in runtime handler %q, which this node no longer has", errFailedPrecondition, rec.ID, rec.handler())
	}
	return rt, nil
}

// forget tells every runtime that an image has left the node.
func (s *service) forget(imageID string) {
	for _, rt := range s.runtimes {
		rt.Forget(imageID)
	}
}

// Status reports the RuntimeReady and NetworkReady conditions and the
// runtime handlers this node offers.
func (s *service) Status(ctx context.Context, req *runtime.StatusRequest) (*runtime.StatusResponse, error) {
	netReady, netReason := s.network.Ready()
	network := &runtime.RuntimeCondition{Type: runtime.NetworkReady, Status: netReady}
	if !netReady {
		network.Reason = "NetworkPluginNotReady"
		network.Message = netReason
	}
	var handlers []*runtime.RuntimeHandler
	for _, h := range sortedKeys(s.runtimes) {
		handlers = append(handlers, &runtime.RuntimeHandler{Name: h, Features: &runtime.RuntimeHandlerFeatures{}})
	}
	return &runtime.StatusResponse{
		Status: &runtime.RuntimeStatus{Conditions: []*runtime.RuntimeCondition{
			{Type: runtime.RuntimeReady, Status: true},
			network,
		}},
		RuntimeHandlers: handlers,
	}, nil
}

// UpdateRuntimeConfig takes the node's pod CIDR (network_config.pod_cidr)
// from the agent, as containerd takes it from the kubelet, and gives it to
// the pod network: with skiff's own CNI network, pods get addresses from
// it, and the network is ready from then on. An empty CIDR changes
// nothing. It is idempotent.
func (s *service) UpdateRuntimeConfig(ctx context.Context, req *runtime.UpdateRuntimeConfigRequest) (*runtime.UpdateRuntimeConfigResponse, error) {
	cidr := req.GetRuntimeConfig().GetNetworkConfig().GetPodCidr()
	if cidr == "" {
		return &runtime.UpdateRuntimeConfigResponse{}, nil
	}
	if n, ok := s.network.(podCIDRSetter); ok {
		if err := n.SetPodCIDR(cidr); err != nil {
			return nil, fmt.Errorf("update runtime config: %w: runtime_config.network_config.pod_cidr: %w", errInvalidArgument, err)
		}
		s.log.Info("pod CIDR set", "cidr", cidr)
	}
	return &runtime.UpdateRuntimeConfigResponse{}, nil
}

// RuntimeConfig tells the kubelet the node's cgroup driver: runtime/oci
// manages cgroups through the cgroup file system (runc's cgroupfs
// driver), not systemd.
func (s *service) RuntimeConfig(ctx context.Context, req *runtime.RuntimeConfigRequest) (*runtime.RuntimeConfigResponse, error) {
	return &runtime.RuntimeConfigResponse{Linux: &runtime.LinuxRuntimeConfiguration{CgroupDriver: runtime.CgroupDriver_CGROUPFS}}, nil
}
