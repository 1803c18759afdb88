package agent

import (
	"context"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// callTimeout bounds every unary CRI call of the agent that has no nearer
// deadline, as the kubelet's runtime client does (its 2-minute
// --runtime-request-timeout). StopContainer gets its grace period on top.
const callTimeout = 2 * time.Minute

// deadlineRuntime gives each CRI call the agent makes a deadline of
// timeout, or the caller's when nearer: a runtime that never answers (a
// module whose start never returns) holds a worker for that long at most.
// The container event stream, long-lived, keeps the caller's context.
type deadlineRuntime struct {
	runtimeapi.RuntimeServiceClient
	timeout time.Duration
}

// withDeadlines wraps rt, unless it is already wrapped.
func withDeadlines(rt runtimeapi.RuntimeServiceClient, timeout time.Duration) runtimeapi.RuntimeServiceClient {
	if rt == nil {
		return nil
	}
	if d, ok := rt.(*deadlineRuntime); ok {
		rt = d.RuntimeServiceClient
	}
	return &deadlineRuntime{RuntimeServiceClient: rt, timeout: timeout}
}

func (r *deadlineRuntime) bound(ctx context.Context, extra time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.timeout+extra)
}

func (r *deadlineRuntime) Status(ctx context.Context, in *runtimeapi.StatusRequest, opts ...grpc.CallOption) (*runtimeapi.StatusResponse, error) {
	ctx, cancel := r.bound(ctx, 0)
	defer cancel()
	return r.RuntimeServiceClient.Status(ctx, in, opts...)
}

func (r *deadlineRuntime) RunPodSandbox(ctx context.Context, in *runtimeapi.RunPodSandboxRequest, opts ...grpc.CallOption) (*runtimeapi.RunPodSandboxResponse, error) {
	ctx, cancel := r.bound(ctx, 0)
	defer cancel()
	return r.RuntimeServiceClient.RunPodSandbox(ctx, in, opts...)
}

func (r *deadlineRuntime) StopPodSandbox(ctx context.Context, in *runtimeapi.StopPodSandboxRequest, opts ...grpc.CallOption) (*runtimeapi.StopPodSandboxResponse, error) {
	ctx, cancel := r.bound(ctx, 0)
	defer cancel()
	return r.RuntimeServiceClient.StopPodSandbox(ctx, in, opts...)
}

func (r *deadlineRuntime) RemovePodSandbox(ctx context.Context, in *runtimeapi.RemovePodSandboxRequest, opts ...grpc.CallOption) (*runtimeapi.RemovePodSandboxResponse, error) {
	ctx, cancel := r.bound(ctx, 0)
	defer cancel()
	return r.RuntimeServiceClient.RemovePodSandbox(ctx, in, opts...)
}

func (r *deadlineRuntime) PodSandboxStatus(ctx context.Context, in *runtimeapi.PodSandboxStatusRequest, opts ...grpc.CallOption) (*runtimeapi.PodSandboxStatusResponse, error) {
	ctx, cancel := r.bound(ctx, 0)
	defer cancel()
	return r.RuntimeServiceClient.PodSandboxStatus(ctx, in, opts...)
}

func (r *deadlineRuntime) ListPodSandbox(ctx context.Context, in *runtimeapi.ListPodSandboxRequest, opts ...grpc.CallOption) (*runtimeapi.ListPodSandboxResponse, error) {
	ctx, cancel := r.bound(ctx, 0)
	defer cancel()
	return r.RuntimeServiceClient.ListPodSandbox(ctx, in, opts...)
}

func (r *deadlineRuntime) CreateContainer(ctx context.Context, in *runtimeapi.CreateContainerRequest, opts ...grpc.CallOption) (*runtimeapi.CreateContainerResponse, error) {
	ctx, cancel := r.bound(ctx, 0)
	defer cancel()
	return r.RuntimeServiceClient.CreateContainer(ctx, in, opts...)
}

func (r *deadlineRuntime) StartContainer(ctx context.Context, in *runtimeapi.StartContainerRequest, opts ...grpc.CallOption) (*runtimeapi.StartContainerResponse, error) {
	ctx, cancel := r.bound(ctx, 0)
	defer cancel()
	return r.RuntimeServiceClient.StartContainer(ctx, in, opts...)
}

// StopContainer may take the container's whole grace period (in.Timeout
// seconds) before it kills it: the deadline is that much further.
func (r *deadlineRuntime) StopContainer(ctx context.Context, in *runtimeapi.StopContainerRequest, opts ...grpc.CallOption) (*runtimeapi.StopContainerResponse, error) {
	ctx, cancel := r.bound(ctx, time.Duration(max(in.GetTimeout(), 0))*time.Second)
	defer cancel()
	return r.RuntimeServiceClient.StopContainer(ctx, in, opts...)
}

func (r *deadlineRuntime) RemoveContainer(ctx context.Context, in *runtimeapi.RemoveContainerRequest, opts ...grpc.CallOption) (*runtimeapi.RemoveContainerResponse, error) {
	ctx, cancel := r.bound(ctx, 0)
	defer cancel()
	return r.RuntimeServiceClient.RemoveContainer(ctx, in, opts...)
}

func (r *deadlineRuntime) ListContainers(ctx context.Context, in *runtimeapi.ListContainersRequest, opts ...grpc.CallOption) (*runtimeapi.ListContainersResponse, error) {
	ctx, cancel := r.bound(ctx, 0)
	defer cancel()
	return r.RuntimeServiceClient.ListContainers(ctx, in, opts...)
}

func (r *deadlineRuntime) ContainerStatus(ctx context.Context, in *runtimeapi.ContainerStatusRequest, opts ...grpc.CallOption) (*runtimeapi.ContainerStatusResponse, error) {
	ctx, cancel := r.bound(ctx, 0)
	defer cancel()
	return r.RuntimeServiceClient.ContainerStatus(ctx, in, opts...)
}

func (r *deadlineRuntime) ListContainerStats(ctx context.Context, in *runtimeapi.ListContainerStatsRequest, opts ...grpc.CallOption) (*runtimeapi.ListContainerStatsResponse, error) {
	ctx, cancel := r.bound(ctx, 0)
	defer cancel()
	return r.RuntimeServiceClient.ListContainerStats(ctx, in, opts...)
}

// deadlineImages does the same for the image service: a pull has the
// same bound as node.go's interceptor gives it.
type deadlineImages struct {
	runtimeapi.ImageServiceClient
	timeout time.Duration
}

func withImageDeadlines(im runtimeapi.ImageServiceClient, timeout time.Duration) runtimeapi.ImageServiceClient {
	if im == nil {
		return nil
	}
	if d, ok := im.(*deadlineImages); ok {
		im = d.ImageServiceClient
	}
	return &deadlineImages{ImageServiceClient: im, timeout: timeout}
}

func (i *deadlineImages) ImageStatus(ctx context.Context, in *runtimeapi.ImageStatusRequest, opts ...grpc.CallOption) (*runtimeapi.ImageStatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, i.timeout)
	defer cancel()
	return i.ImageServiceClient.ImageStatus(ctx, in, opts...)
}

func (i *deadlineImages) PullImage(ctx context.Context, in *runtimeapi.PullImageRequest, opts ...grpc.CallOption) (*runtimeapi.PullImageResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, i.timeout)
	defer cancel()
	return i.ImageServiceClient.PullImage(ctx, in, opts...)
}
