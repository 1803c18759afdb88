package apiserver

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

var podKind = &kind[*skiffv1.Pod]{
	name:        "pod",
	plural:      "pods",
	namespaced:  true,
	new:         func() *skiffv1.Pod { return &skiffv1.Pod{} },
	validate:    validatePod,
	defaults:    defaultPod,
	initial:     func(p *skiffv1.Pod) { p.Status = &skiffv1.PodStatus{Phase: "Pending"} },
	checkUpdate: checkPodUpdate,
}

var restartPolicies = map[string]bool{"Always": true, "OnFailure": true, "Never": true}

// runtimeClasses are the runtime class names a pod may ask for.
var runtimeClasses = map[string]bool{"": true, "wasm": true, "runc": true}

func defaultPod(p *skiffv1.Pod) {
	if p.Spec == nil {
		return
	}
	if p.Spec.RestartPolicy == "" {
		p.Spec.RestartPolicy = "Always"
	}
}

func validatePod(p *skiffv1.Pod) fieldErrors {
	fe := fieldErrors{}
	s := p.GetSpec()
	if s == nil {
		fe.add("spec", "required value")
		return fe
	}
	if len(s.Containers) == 0 {
		fe.add("spec.containers", "required value: a pod needs at least one container")
	}
	names := map[string]bool{}
	for i, c := range s.Containers {
		path := fmt.Sprintf("spec.containers[%d]", i)
		validateLabel(&fe, path+".name", c.GetName())
		if names[c.GetName()] {
			fe.add(path+".name", "duplicate value %q", c.GetName())
		}
		names[c.GetName()] = true
		if c.GetImage() == "" {
			fe.add(path+".image", "required value")
		}
		for j, e := range c.GetEnv() {
			if !envVarName.MatchString(e.GetName()) {
				fe.add(fmt.Sprintf("%s.env[%d].name", path, j), "invalid value %q: must consist of alphabetic characters, digits, '_', '-' or '.', and must not start with a digit", e.GetName())
			}
		}
	}
	if !restartPolicies[s.RestartPolicy] {
		fe.add("spec.restartPolicy", "unsupported value %q: supported values are \"Always\", \"OnFailure\", \"Never\"", s.RestartPolicy)
	}
	if !runtimeClasses[s.RuntimeClassName] {
		fe.add("spec.runtimeClassName", "unsupported value %q: supported values are \"wasm\", \"runc\"", s.RuntimeClassName)
	}
	if s.NodeName != "" {
		validateSubdomain(&fe, "spec.nodeName", s.NodeName)
	}
	if st := p.GetStatus(); st != nil && st.Phase != "" {
		switch st.Phase {
		case "Pending", "Running", "Succeeded", "Failed", "Unknown":
		default:
			fe.add("status.phase", "unsupported value %q", st.Phase)
		}
	}
	return fe
}

// checkPodUpdate keeps a pod's spec fixed once created, as Kubernetes does,
// except that an unbound pod may be bound to a node once.
func checkPodUpdate(old, p *skiffv1.Pod) fieldErrors {
	fe := fieldErrors{}
	was, is := old.GetSpec().GetNodeName(), p.GetSpec().GetNodeName()
	if was != "" && is != was {
		fe.add("spec.nodeName", "field is immutable once set (is %q)", was)
	}
	if !proto.Equal(withoutNode(old.GetSpec()), withoutNode(p.GetSpec())) {
		fe.add("spec", "pod updates may not change fields other than spec.nodeName (delete the pod and create it again)")
	}
	return fe
}

func withoutNode(s *skiffv1.PodSpec) *skiffv1.PodSpec {
	c := proto.Clone(s).(*skiffv1.PodSpec)
	c.NodeName = ""
	return c
}

type podService struct {
	r      *resources
	agents agentDialer
}

var _ skiffv1connect.PodServiceHandler = (*podService)(nil)

func (s *podService) Create(ctx context.Context, req *connect.Request[skiffv1.CreatePodRequest]) (*connect.Response[skiffv1.Pod], error) {
	p, err := create(ctx, s.r, podKind, req.Msg.GetPod(), req.Msg.GetDryRun())
	return respond(p, err)
}

func (s *podService) Get(ctx context.Context, req *connect.Request[skiffv1.GetPodRequest]) (*connect.Response[skiffv1.Pod], error) {
	p, err := get(ctx, s.r, podKind, req.Msg.GetNamespace(), req.Msg.GetName())
	return respond(p, err)
}

func onNode(node string) func(*skiffv1.Pod) bool {
	if node == "" {
		return nil
	}
	return func(p *skiffv1.Pod) bool { return p.GetSpec().GetNodeName() == node }
}

func (s *podService) List(ctx context.Context, req *connect.Request[skiffv1.ListPodsRequest]) (*connect.Response[skiffv1.PodList], error) {
	items, rev, err := list(ctx, s.r, podKind, req.Msg.GetNamespace(), onNode(req.Msg.GetNodeName()))
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&skiffv1.PodList{Items: items, ResourceVersion: rev}), nil
}

func (s *podService) Update(ctx context.Context, req *connect.Request[skiffv1.UpdatePodRequest]) (*connect.Response[skiffv1.Pod], error) {
	p, err := update(ctx, s.r, podKind, req.Msg.GetPod(), req.Msg.GetDryRun())
	return respond(p, err)
}

func (s *podService) Delete(ctx context.Context, req *connect.Request[skiffv1.DeletePodRequest]) (*connect.Response[skiffv1.Pod], error) {
	p, err := remove(ctx, s.r, podKind, req.Msg.GetNamespace(), req.Msg.GetName(), req.Msg.GetResourceVersion())
	return respond(p, err)
}

func (s *podService) Watch(ctx context.Context, req *connect.Request[skiffv1.WatchPodsRequest], stream *connect.ServerStream[skiffv1.PodEvent]) error {
	return watch(ctx, s.r, podKind, req.Msg.GetNamespace(), req.Msg.GetResourceVersion(), onNode(req.Msg.GetNodeName()),
		func(t skiffv1.EventType, p *skiffv1.Pod) error {
			return stream.Send(&skiffv1.PodEvent{Type: t, Object: p})
		})
}

// Logs asks the agent of the pod's node for the container's output, as the
// Kubernetes API server asks the kubelet.
func (s *podService) Logs(ctx context.Context, req *connect.Request[skiffv1.PodLogsRequest]) (*connect.Response[skiffv1.PodLogsResponse], error) {
	p, err := get(ctx, s.r, podKind, req.Msg.GetNamespace(), req.Msg.GetName())
	if err != nil {
		return nil, err
	}
	container := req.Msg.GetContainer()
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
	n, err := get(ctx, s.r, nodeKind, "", node)
	if err != nil {
		return nil, err
	}
	endpoint := n.GetStatus().GetAgentEndpoint()
	if endpoint == "" {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("node %q has not reported an agent endpoint", node))
	}
	res, err := s.agents(endpoint).ContainerLogs(ctx, connect.NewRequest(&skiffv1.ContainerLogsRequest{
		Namespace: p.Metadata.Namespace, Pod: p.Metadata.Name, PodUid: p.Metadata.Uid, Container: container,
	}))
	if err != nil {
		return nil, connect.NewError(connect.CodeOf(err), fmt.Errorf("read logs from node %q (agent at %s): %s", node, endpoint, connectMessage(err)))
	}
	return connect.NewResponse(&skiffv1.PodLogsResponse{Data: res.Msg.GetData()}), nil
}

func hasContainer(p *skiffv1.Pod, name string) bool {
	for _, c := range p.GetSpec().GetContainers() {
		if c.GetName() == name {
			return true
		}
	}
	return false
}

func respond[T any](msg *T, err error) (*connect.Response[T], error) {
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(msg), nil
}

func connectMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}
