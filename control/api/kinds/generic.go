package kinds

import (
	"context"
	"fmt"
	"net/http"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// Backend serves the six shared verbs of every kind. The apiserver
// implements it once; GenericHandler adapts it to each kind's generated
// service. Its methods return Connect errors.
type Backend interface {
	Create(ctx context.Context, k *Kind, obj Object, dryRun bool) (Object, error)
	Get(ctx context.Context, k *Kind, req *skiffv1.GetRequest) (Object, error)
	List(ctx context.Context, k *Kind, req *skiffv1.ListRequest) ([]Object, uint64, error)
	Update(ctx context.Context, k *Kind, obj Object, dryRun bool) (Object, error)
	Delete(ctx context.Context, k *Kind, req *skiffv1.DeleteRequest, dryRun bool) (Object, error)
	// Watch calls send for each change until ctx ends or send fails.
	// Once the watch is established it calls send(EVENT_TYPE_UNSPECIFIED,
	// nil), which sends the response headers: when a client's Watch call
	// returns, it misses no later change. It may send the same object to
	// many watches, and never changes an object once sent; send does not
	// change it either.
	Watch(ctx context.Context, k *Kind, req *skiffv1.WatchRequest, send func(skiffv1.EventType, Object) error) error
}

// EventSharer is a Backend that shares watch event messages between
// watches: GenericService builds and encodes each through its WatchEvents,
// which the server's codecs consult too.
type EventSharer interface {
	WatchEvents() *WatchEvents
}

// Client is a kind's service seen without its types, for code that works
// on any kind (the CLI's get, apply, delete and describe).
type Client interface {
	Create(ctx context.Context, obj Object, dryRun bool) (Object, error)
	Get(ctx context.Context, ns, name string) (Object, error)
	List(ctx context.Context, req *skiffv1.ListRequest) ([]Object, uint64, error)
	Update(ctx context.Context, obj Object, dryRun bool) (Object, error)
	Delete(ctx context.Context, req *skiffv1.DeleteRequest) (Object, error)
	Watch(ctx context.Context, req *skiffv1.WatchRequest) (Stream, error)
}

// Stream is an open watch. Receive blocks for the next change and returns
// false when the stream ends; Err then says why. Event returns the type and
// the object; when the request set allow_bookmarks, an event may be
// EVENT_TYPE_BOOKMARK, whose object is empty but for
// metadata.resourceVersion: no object changed, and a caller must not treat
// it as one.
type Stream interface {
	Receive() bool
	Event() (skiffv1.EventType, Object)
	Err() error
	Close() error
}

// service is the shape every kind's generated client has.
type service[T, L, E any] interface {
	Create(context.Context, *connect.Request[T]) (*connect.Response[T], error)
	Get(context.Context, *connect.Request[skiffv1.GetRequest]) (*connect.Response[T], error)
	List(context.Context, *connect.Request[skiffv1.ListRequest]) (*connect.Response[L], error)
	Update(context.Context, *connect.Request[T]) (*connect.Response[T], error)
	Delete(context.Context, *connect.Request[skiffv1.DeleteRequest]) (*connect.Response[T], error)
	Watch(context.Context, *connect.Request[skiffv1.WatchRequest]) (*connect.ServerStreamForClient[E], error)
}

type ptr[T any] interface {
	*T
	proto.Message
}

type objPtr[T any] interface {
	*T
	Object
}

// Register adds a kind: k describes it, newClient and newHandler are its
// generated constructors (skiffv1connect.NewPodServiceClient, ...). T is
// the object message, L its list and E its watch event message.
func Register[T, L, E any, PT objPtr[T], PL ptr[L], PE ptr[E], C service[T, L, E], H any](
	k Kind,
	newClient func(connect.HTTPClient, string, ...connect.ClientOption) C,
	newHandler func(H, ...connect.HandlerOption) (string, http.Handler),
) *Kind {
	kp := &k
	kp.new = func() Object { return PT(new(T)) }
	kp.newList = func() proto.Message { return PL(new(L)) }
	kp.client = func(hc connect.HTTPClient, base string, opts ...connect.ClientOption) Client {
		return &client[T, L, E, PT, PL, PE]{k: kp, c: newClient(hc, base, opts...)}
	}
	kp.generic = func(b Backend) any { return &GenericService[T, L, E, PT, PL, PE]{Kind: kp, Backend: b} }
	kp.mount = func(impl any, opts ...connect.HandlerOption) (string, http.Handler, error) {
		h, ok := impl.(H)
		if !ok {
			var want *H
			return "", nil, fmt.Errorf("serve kind %s: %T does not implement %T", kp.Kind, impl, want)
		}
		path, handler := newHandler(h, opts...)
		return path, handler, nil
	}
	return add(kp)
}

// GenericService implements a kind's six shared verbs over a Backend. It
// satisfies the kind's generated handler interface when the service has
// only those; a service with more embeds it.
type GenericService[T, L, E any, PT objPtr[T], PL ptr[L], PE ptr[E]] struct {
	Kind    *Kind
	Backend Backend
}

// DryRun reports whether a request asks for a dry run.
func DryRun(h http.Header) bool { return h.Get(DryRunHeader) == "All" }

func (s *GenericService[T, L, E, PT, PL, PE]) Create(ctx context.Context, req *connect.Request[T]) (*connect.Response[T], error) {
	return respond[T](s.Backend.Create(ctx, s.Kind, PT(req.Msg), DryRun(req.Header())))
}

func (s *GenericService[T, L, E, PT, PL, PE]) Get(ctx context.Context, req *connect.Request[skiffv1.GetRequest]) (*connect.Response[T], error) {
	return respond[T](s.Backend.Get(ctx, s.Kind, req.Msg))
}

func (s *GenericService[T, L, E, PT, PL, PE]) List(ctx context.Context, req *connect.Request[skiffv1.ListRequest]) (*connect.Response[L], error) {
	items, rev, err := s.Backend.List(ctx, s.Kind, req.Msg)
	if err != nil {
		return nil, err
	}
	l := PL(new(L))
	fillList(l.ProtoReflect(), items, rev)
	return connect.NewResponse((*L)(l)), nil
}

func (s *GenericService[T, L, E, PT, PL, PE]) Update(ctx context.Context, req *connect.Request[T]) (*connect.Response[T], error) {
	return respond[T](s.Backend.Update(ctx, s.Kind, PT(req.Msg), DryRun(req.Header())))
}

func (s *GenericService[T, L, E, PT, PL, PE]) Delete(ctx context.Context, req *connect.Request[skiffv1.DeleteRequest]) (*connect.Response[T], error) {
	return respond[T](s.Backend.Delete(ctx, s.Kind, req.Msg, DryRun(req.Header())))
}

func (s *GenericService[T, L, E, PT, PL, PE]) Watch(ctx context.Context, req *connect.Request[skiffv1.WatchRequest], stream *connect.ServerStream[E]) error {
	var shared *WatchEvents
	if es, ok := s.Backend.(EventSharer); ok {
		shared = es.WatchEvents()
	}
	return s.Backend.Watch(ctx, s.Kind, req.Msg, func(t skiffv1.EventType, o Object) error {
		if o == nil {
			return stream.Send(nil) // the headers alone
		}
		build := func() proto.Message {
			e := PE(new(E))
			setEvent(e.ProtoReflect(), t, o)
			return e
		}
		if t == skiffv1.EventType_EVENT_TYPE_BOOKMARK {
			return stream.Send((*E)(build().(PE))) // one watch's own
		}
		return stream.Send((*E)(shared.event(t, o, build).(PE)))
	})
}

func respond[T any](o Object, err error) (*connect.Response[T], error) {
	if err != nil {
		return nil, err
	}
	t, ok := any(o).(*T)
	if !ok {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("backend returned %T, want %T", o, t))
	}
	return connect.NewResponse(t), nil
}

// fillList sets a list message's items and resource_version.
func fillList(m protoreflect.Message, items []Object, rev uint64) {
	fields := m.Descriptor().Fields()
	l := m.Mutable(fields.ByName("items")).List()
	for _, o := range items {
		l.Append(protoreflect.ValueOfMessage(o.ProtoReflect()))
	}
	m.Set(fields.ByName("resource_version"), protoreflect.ValueOfUint64(rev))
}

// listItems reads a list message's items and resource_version.
func listItems(m protoreflect.Message) ([]Object, uint64) {
	fields := m.Descriptor().Fields()
	l := m.Get(fields.ByName("items")).List()
	out := make([]Object, 0, l.Len())
	for i := 0; i < l.Len(); i++ {
		out = append(out, l.Get(i).Message().Interface().(Object))
	}
	return out, m.Get(fields.ByName("resource_version")).Uint()
}

func setEvent(m protoreflect.Message, t skiffv1.EventType, o Object) {
	fields := m.Descriptor().Fields()
	m.Set(fields.ByName("type"), protoreflect.ValueOfEnum(protoreflect.EnumNumber(t)))
	m.Set(fields.ByName("object"), protoreflect.ValueOfMessage(o.ProtoReflect()))
}

func getEvent(m protoreflect.Message) (skiffv1.EventType, Object) {
	fields := m.Descriptor().Fields()
	t := skiffv1.EventType(m.Get(fields.ByName("type")).Enum())
	return t, m.Get(fields.ByName("object")).Message().Interface().(Object)
}

// client adapts a kind's generated client to Client.
type client[T, L, E any, PT objPtr[T], PL ptr[L], PE ptr[E]] struct {
	k *Kind
	c service[T, L, E]
}

func request[T any](msg *T, dryRun bool) *connect.Request[T] {
	r := connect.NewRequest(msg)
	if dryRun {
		r.Header().Set(DryRunHeader, "All")
	}
	return r
}

func (c *client[T, L, E, PT, PL, PE]) cast(o Object) (*T, error) {
	t, ok := o.(PT)
	if !ok {
		return nil, fmt.Errorf("%s client: got %T", c.k.Kind, o)
	}
	return (*T)(t), nil
}

func (c *client[T, L, E, PT, PL, PE]) Create(ctx context.Context, o Object, dryRun bool) (Object, error) {
	t, err := c.cast(o)
	if err != nil {
		return nil, err
	}
	res, err := c.c.Create(ctx, request(t, dryRun))
	if err != nil {
		return nil, err
	}
	return PT(res.Msg), nil
}

func (c *client[T, L, E, PT, PL, PE]) Get(ctx context.Context, ns, name string) (Object, error) {
	res, err := c.c.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Namespace: ns, Name: name}))
	if err != nil {
		return nil, err
	}
	return PT(res.Msg), nil
}

func (c *client[T, L, E, PT, PL, PE]) List(ctx context.Context, req *skiffv1.ListRequest) ([]Object, uint64, error) {
	res, err := c.c.List(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, 0, err
	}
	items, rev := listItems(PL(res.Msg).ProtoReflect())
	return items, rev, nil
}

func (c *client[T, L, E, PT, PL, PE]) Update(ctx context.Context, o Object, dryRun bool) (Object, error) {
	t, err := c.cast(o)
	if err != nil {
		return nil, err
	}
	res, err := c.c.Update(ctx, request(t, dryRun))
	if err != nil {
		return nil, err
	}
	return PT(res.Msg), nil
}

func (c *client[T, L, E, PT, PL, PE]) Delete(ctx context.Context, req *skiffv1.DeleteRequest) (Object, error) {
	res, err := c.c.Delete(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return PT(res.Msg), nil
}

func (c *client[T, L, E, PT, PL, PE]) Watch(ctx context.Context, req *skiffv1.WatchRequest) (Stream, error) {
	st, err := c.c.Watch(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return &stream[E, PE]{st: st}, nil
}

type stream[E any, PE ptr[E]] struct {
	st *connect.ServerStreamForClient[E]
}

func (s *stream[E, PE]) Receive() bool { return s.st.Receive() }
func (s *stream[E, PE]) Event() (skiffv1.EventType, Object) {
	return getEvent(PE(s.st.Msg()).ProtoReflect())
}
func (s *stream[E, PE]) Err() error   { return s.st.Err() }
func (s *stream[E, PE]) Close() error { return s.st.Close() }
