package apiserver

import (
	"context"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

var nodeKind = &kind[*skiffv1.Node]{
	name:   "node",
	plural: "nodes",
	new:    func() *skiffv1.Node { return &skiffv1.Node{} },
}

type nodeService struct{ r *resources }

var _ skiffv1connect.NodeServiceHandler = (*nodeService)(nil)

func (s *nodeService) Create(ctx context.Context, req *connect.Request[skiffv1.CreateNodeRequest]) (*connect.Response[skiffv1.Node], error) {
	n, err := create(ctx, s.r, nodeKind, req.Msg.GetNode(), req.Msg.GetDryRun())
	return respond(n, err)
}

func (s *nodeService) Get(ctx context.Context, req *connect.Request[skiffv1.GetNodeRequest]) (*connect.Response[skiffv1.Node], error) {
	n, err := get(ctx, s.r, nodeKind, "", req.Msg.GetName())
	return respond(n, err)
}

func (s *nodeService) List(ctx context.Context, req *connect.Request[skiffv1.ListNodesRequest]) (*connect.Response[skiffv1.NodeList], error) {
	items, rev, err := list(ctx, s.r, nodeKind, "", nil)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&skiffv1.NodeList{Items: items, ResourceVersion: rev}), nil
}

func (s *nodeService) Update(ctx context.Context, req *connect.Request[skiffv1.UpdateNodeRequest]) (*connect.Response[skiffv1.Node], error) {
	n, err := update(ctx, s.r, nodeKind, req.Msg.GetNode(), req.Msg.GetDryRun())
	return respond(n, err)
}

func (s *nodeService) Delete(ctx context.Context, req *connect.Request[skiffv1.DeleteNodeRequest]) (*connect.Response[skiffv1.Node], error) {
	n, err := remove(ctx, s.r, nodeKind, "", req.Msg.GetName(), req.Msg.GetResourceVersion())
	return respond(n, err)
}

func (s *nodeService) Watch(ctx context.Context, req *connect.Request[skiffv1.WatchNodesRequest], stream *connect.ServerStream[skiffv1.NodeEvent]) error {
	return watch(ctx, s.r, nodeKind, "", req.Msg.GetResourceVersion(), nil,
		func(t skiffv1.EventType, n *skiffv1.Node) error {
			return stream.Send(&skiffv1.NodeEvent{Type: t, Object: n})
		})
}
