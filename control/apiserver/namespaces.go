package apiserver

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/store"
)

var namespaceKind = &kind[*skiffv1.Namespace]{
	name:     "namespace",
	plural:   "namespaces",
	new:      func() *skiffv1.Namespace { return &skiffv1.Namespace{} },
	initial:  func(n *skiffv1.Namespace) { n.Status = &skiffv1.NamespaceStatus{Phase: "Active"} },
	nameRule: validateLabel,
}

// DefaultNamespace is where objects go when their manifest names none.
const DefaultNamespace = "default"

type namespaceService struct{ r *resources }

var _ skiffv1connect.NamespaceServiceHandler = (*namespaceService)(nil)

// exists answers NotFound for a namespace that is missing, so that objects
// cannot be created in it.
func (s *namespaceService) exists(ctx context.Context, ns string) error {
	_, err := s.r.store.Get(ctx, namespaceKind.key("", ns))
	if errors.Is(err, store.ErrNotFound) {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("namespace %q not found", ns))
	}
	return toConnect(err)
}

// ensureDefault creates the default namespace when it is missing.
func (s *namespaceService) ensureDefault(ctx context.Context) error {
	_, err := create(ctx, s.r, namespaceKind, &skiffv1.Namespace{Metadata: &skiffv1.ObjectMeta{Name: DefaultNamespace}}, false)
	if connect.CodeOf(err) == connect.CodeAlreadyExists {
		return nil
	}
	return err
}

func (s *namespaceService) Create(ctx context.Context, req *connect.Request[skiffv1.CreateNamespaceRequest]) (*connect.Response[skiffv1.Namespace], error) {
	n, err := create(ctx, s.r, namespaceKind, req.Msg.GetNamespace(), req.Msg.GetDryRun())
	return respond(n, err)
}

func (s *namespaceService) Get(ctx context.Context, req *connect.Request[skiffv1.GetNamespaceRequest]) (*connect.Response[skiffv1.Namespace], error) {
	n, err := get(ctx, s.r, namespaceKind, "", req.Msg.GetName())
	return respond(n, err)
}

func (s *namespaceService) List(ctx context.Context, req *connect.Request[skiffv1.ListNamespacesRequest]) (*connect.Response[skiffv1.NamespaceList], error) {
	items, rev, err := list(ctx, s.r, namespaceKind, "", nil)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&skiffv1.NamespaceList{Items: items, ResourceVersion: rev}), nil
}

func (s *namespaceService) Update(ctx context.Context, req *connect.Request[skiffv1.UpdateNamespaceRequest]) (*connect.Response[skiffv1.Namespace], error) {
	n, err := update(ctx, s.r, namespaceKind, req.Msg.GetNamespace(), req.Msg.GetDryRun())
	return respond(n, err)
}

// Delete removes an empty namespace. Unlike Kubernetes it does not cascade:
// a namespace that still holds pods is refused, so nothing is deleted by
// surprise. The default namespace cannot be deleted.
func (s *namespaceService) Delete(ctx context.Context, req *connect.Request[skiffv1.DeleteNamespaceRequest]) (*connect.Response[skiffv1.Namespace], error) {
	name := req.Msg.GetName()
	if name == DefaultNamespace {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("namespace %q cannot be deleted", name))
	}
	pods, _, err := list(ctx, s.r, podKind, name, nil)
	if err != nil {
		return nil, err
	}
	if len(pods) > 0 {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("namespace %q still has %d pod(s); delete them first", name, len(pods)))
	}
	n, err := remove(ctx, s.r, namespaceKind, "", name, req.Msg.GetResourceVersion())
	return respond(n, err)
}

func (s *namespaceService) Watch(ctx context.Context, req *connect.Request[skiffv1.WatchNamespacesRequest], stream *connect.ServerStream[skiffv1.NamespaceEvent]) error {
	return watch(ctx, s.r, namespaceKind, "", req.Msg.GetResourceVersion(), nil,
		func(t skiffv1.EventType, n *skiffv1.Namespace) error {
			return stream.Send(&skiffv1.NamespaceEvent{Type: t, Object: n})
		})
}
