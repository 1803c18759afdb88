package apiserver

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
)

// agentCallTimeout bounds a unary call to an agent.
const agentCallTimeout = 30 * time.Second

// logsTarget is the agent and the request that read a pod's container log.
type logsTarget struct {
	agent    skiffv1connect.AgentServiceClient
	req      *skiffv1.ContainerLogsRequest
	node     string
	endpoint string
}

// logsTarget checks a logs request and finds the pod's node, its agent and
// the container, with errors naming what is missing.
func (s *podService) logsTarget(ctx context.Context, r *skiffv1.PodLogsRequest) (*logsTarget, error) {
	fe := fieldErrors{}
	if r.TailLines != nil && r.GetTailLines() < 0 {
		fe.add("tailLines", "invalid value %d: must not be negative", r.GetTailLines())
	}
	if r.SinceSeconds != nil && r.GetSinceSeconds() <= 0 {
		fe.add("sinceSeconds", "invalid value %d: must be positive", r.GetSinceSeconds())
	}
	if r.LimitBytes != nil && r.GetLimitBytes() <= 0 {
		fe.add("limitBytes", "invalid value %d: must be positive", r.GetLimitBytes())
	}
	if err := fe.err("logs request of pod", r.GetName()); err != nil {
		return nil, err
	}
	o, err := s.b.get(ctx, kinds.Pod, r.GetNamespace(), r.GetName())
	if err != nil {
		return nil, err
	}
	p := o.(*skiffv1.Pod)
	container := r.GetContainer()
	if container == "" {
		if n := len(p.Spec.GetContainers()); n != 1 {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("pod %q has %d containers: name one with -c", p.Metadata.Name, n))
		}
		container = p.Spec.Containers[0].Name
	} else if !hasContainer(p, container) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("pod %q has no container %q", p.Metadata.Name, container))
	}
	node := p.GetSpec().GetNodeName()
	if node == "" {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("pod %q is not scheduled to a node yet", p.Metadata.Name))
	}
	no, err := s.b.get(ctx, kinds.Node, "", node)
	if err != nil {
		return nil, err
	}
	endpoint := no.(*skiffv1.Node).GetStatus().GetAgentEndpoint()
	if endpoint == "" {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("node %q has not reported an agent endpoint", node))
	}
	return &logsTarget{
		agent: s.agents(node, endpoint),
		req: &skiffv1.ContainerLogsRequest{
			Namespace: p.Metadata.Namespace, Pod: p.Metadata.Name, PodUid: p.Metadata.Uid, Container: container,
			Follow: r.GetFollow(), Previous: r.GetPrevious(), TailLines: r.TailLines, SinceSeconds: r.SinceSeconds,
			Timestamps: r.GetTimestamps(), LimitBytes: r.LimitBytes,
		},
		node: node, endpoint: endpoint,
	}, nil
}

func (t *logsTarget) fail(err error) error {
	return connect.NewError(connect.CodeOf(err), fmt.Errorf("read logs from node %q (agent at %s): %s", t.node, t.endpoint, connectMessage(err)))
}

// Logs asks the agent of the pod's node for the container's output, as the
// Kubernetes API server asks the kubelet. The agent returns at most a few
// MiB; StreamLogs has no such bound, and follows.
func (s *podService) Logs(ctx context.Context, req *connect.Request[skiffv1.PodLogsRequest]) (*connect.Response[skiffv1.PodLogsResponse], error) {
	if req.Msg.GetFollow() {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("follow: only StreamLogs follows a log"))
	}
	t, err := s.logsTarget(ctx, req.Msg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, agentCallTimeout)
	defer cancel()
	res, err := t.agent.ContainerLogs(ctx, connect.NewRequest(t.req))
	if err != nil {
		return nil, t.fail(err)
	}
	return connect.NewResponse(&skiffv1.PodLogsResponse{Data: res.Msg.GetData()}), nil
}

// StreamLogs relays the agent's stream of the container's output, chunk by
// chunk as it arrives, until the agent ends it or the client goes away
// (which cancels ctx, and with it the agent's stream).
func (s *podService) StreamLogs(ctx context.Context, req *connect.Request[skiffv1.PodLogsRequest], st *connect.ServerStream[skiffv1.LogChunk]) error {
	t, err := s.logsTarget(ctx, req.Msg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	in, err := t.agent.StreamContainerLogs(ctx, connect.NewRequest(t.req))
	if err != nil {
		return t.fail(err)
	}
	defer in.Close()
	for in.Receive() {
		if err := st.Send(in.Msg()); err != nil {
			return err
		}
	}
	if err := in.Err(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return t.fail(err)
	}
	return nil
}
