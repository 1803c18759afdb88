package controllers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
)

// EndpointsController keeps, for each service with a selector, the
// Endpoints object of the same name (BuildEndpoints), and deletes the
// Endpoints it wrote when their service goes.
//
// It follows services, pods and endpoints through list and watch, in one
// owner goroutine that holds the three caches and a set of services to
// look at again. A change marks the services it touches; after Batch
// the marked services are written, each once, and only if its endpoints
// changed: a rollout of many pods costs a write per service per Batch, not
// per pod. A write is a compare-and-swap on the version last seen, so a
// second copy running during a leader change only loses conflicts.
type EndpointsController struct {
	Services  skiffv1connect.ServiceServiceClient
	Pods      skiffv1connect.PodServiceClient
	Endpoints skiffv1connect.EndpointsServiceClient
	Logger    *slog.Logger
	// Batch is how long changes gather before the services they touch are
	// written (DefaultEndpointsBatch when zero).
	Batch time.Duration
	// Resync is how often every service is looked at again without a
	// change, a safety net (ten minutes when zero).
	Resync time.Duration
}

// DefaultEndpointsBatch is EndpointsController.Batch's default.
const DefaultEndpointsBatch = 100 * time.Millisecond

// What the controller's follows tell its owner goroutine.
type (
	// change is one watch event, or (replace) a fresh list of the kind.
	change struct {
		kind    objKind
		replace bool
		items   []object // for replace
		typ     skiffv1.EventType
		obj     object
	}
	objKind int
	object  interface {
		proto.Message
		GetMetadata() *skiffv1.ObjectMeta
	}
)

const (
	kindServices objKind = iota
	kindPods
	kindEndpoints
	kindReplicaSets
	kindDeployments
	kindNodes
)

// epState is the owner goroutine's: the caches and the marked services.
type epState struct {
	services  map[string]*skiffv1.Service
	pods      map[string]map[string]*skiffv1.Pod // by namespace, then name
	endpoints map[string]*skiffv1.Endpoints
	listed    [3]bool // each kind's first list has come
	dirty     map[string]bool
}

func objKey(o object) string {
	return o.GetMetadata().GetNamespace() + "/" + o.GetMetadata().GetName()
}

// Run keeps endpoints until ctx ends.
func (c *EndpointsController) Run(ctx context.Context) {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	batch := c.Batch
	if batch == 0 {
		batch = DefaultEndpointsBatch
	}
	resync := c.Resync
	if resync == 0 {
		resync = 10 * time.Minute
	}
	changes := make(chan change, 256)
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() {
		follow(ctx, log, kindServices, changes, func(ctx context.Context) ([]object, uint64, error) {
			res, err := c.Services.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
			if err != nil {
				return nil, 0, err
			}
			return toObjects(res.Msg.GetItems()), res.Msg.GetResourceVersion(), nil
		}, func(ctx context.Context, rev uint64) (*connect.ServerStreamForClient[skiffv1.ServiceWatchEvent], error) {
			return c.Services.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{ResourceVersion: rev, AllowBookmarks: true}))
		}, func(e *skiffv1.ServiceWatchEvent) (skiffv1.EventType, object) { return e.GetType(), e.GetObject() })
	})
	wg.Go(func() {
		follow(ctx, log, kindPods, changes, func(ctx context.Context) ([]object, uint64, error) {
			res, err := c.Pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
			if err != nil {
				return nil, 0, err
			}
			return toObjects(res.Msg.GetItems()), res.Msg.GetResourceVersion(), nil
		}, func(ctx context.Context, rev uint64) (*connect.ServerStreamForClient[skiffv1.PodWatchEvent], error) {
			return c.Pods.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{ResourceVersion: rev, AllowBookmarks: true}))
		}, func(e *skiffv1.PodWatchEvent) (skiffv1.EventType, object) { return e.GetType(), e.GetObject() })
	})
	wg.Go(func() {
		follow(ctx, log, kindEndpoints, changes, func(ctx context.Context) ([]object, uint64, error) {
			res, err := c.Endpoints.List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
			if err != nil {
				return nil, 0, err
			}
			return toObjects(res.Msg.GetItems()), res.Msg.GetResourceVersion(), nil
		}, func(ctx context.Context, rev uint64) (*connect.ServerStreamForClient[skiffv1.EndpointsWatchEvent], error) {
			return c.Endpoints.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{ResourceVersion: rev, AllowBookmarks: true}))
		}, func(e *skiffv1.EndpointsWatchEvent) (skiffv1.EventType, object) { return e.GetType(), e.GetObject() })
	})

	st := &epState{
		services:  map[string]*skiffv1.Service{},
		pods:      map[string]map[string]*skiffv1.Pod{},
		endpoints: map[string]*skiffv1.Endpoints{},
		dirty:     map[string]bool{},
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	arm := func(d time.Duration) {
		if !armed {
			timer.Reset(d)
			armed = true
		}
	}
	defer timer.Stop()
	tick := time.NewTicker(resync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ch := <-changes:
			st.apply(ch)
		case <-tick.C:
			for k := range st.services {
				st.dirty[k] = true
			}
		case <-timer.C:
			armed = false
			if !st.listed[kindServices] || !st.listed[kindPods] || !st.listed[kindEndpoints] {
				continue // nothing is written before every cache is whole
			}
			failed := false
			for key := range st.dirty {
				delete(st.dirty, key)
				if err := c.sync(ctx, st, key); err != nil {
					if ctx.Err() != nil {
						return
					}
					lvl := slog.LevelWarn
					if errors.Is(err, errStale) {
						lvl = slog.LevelDebug // another writer; its event is on its way
					}
					log.Log(ctx, lvl, "sync endpoints; trying again", "service", key, "err", err)
					st.dirty[key] = true
					failed = true
				}
			}
			if failed {
				arm(time.Second)
			}
		}
		if len(st.dirty) > 0 {
			arm(batch)
		}
	}
}

func toObjects[T object](items []T) []object {
	out := make([]object, len(items))
	for i, it := range items {
		out[i] = it
	}
	return out
}

// apply folds a change into the caches and marks the services it touches.
func (st *epState) apply(ch change) {
	if ch.replace {
		st.listed[ch.kind] = true
	}
	switch ch.kind {
	case kindServices:
		if ch.replace {
			for k := range st.services {
				st.dirty[k] = true
			}
			st.services = map[string]*skiffv1.Service{}
			for _, o := range ch.items {
				st.services[objKey(o)] = o.(*skiffv1.Service)
				st.dirty[objKey(o)] = true
			}
			break
		}
		k := objKey(ch.obj)
		if ch.typ == skiffv1.EventType_EVENT_TYPE_DELETED {
			delete(st.services, k)
		} else {
			st.services[k] = ch.obj.(*skiffv1.Service)
		}
		st.dirty[k] = true
	case kindPods:
		if ch.replace {
			st.pods = map[string]map[string]*skiffv1.Pod{}
			for _, o := range ch.items {
				st.putPod(o.(*skiffv1.Pod))
			}
			for k := range st.services {
				st.dirty[k] = true
			}
			break
		}
		p := ch.obj.(*skiffv1.Pod)
		ns, name := p.GetMetadata().GetNamespace(), p.GetMetadata().GetName()
		old := st.pods[ns][name]
		if ch.typ == skiffv1.EventType_EVENT_TYPE_DELETED {
			delete(st.pods[ns], name)
		} else {
			st.putPod(p)
		}
		for k, s := range st.services {
			if s.GetMetadata().GetNamespace() == ns && (selects(s, p.GetMetadata().GetLabels()) || old != nil && selects(s, old.GetMetadata().GetLabels())) {
				st.dirty[k] = true
			}
		}
	case kindEndpoints:
		if ch.replace {
			st.endpoints = map[string]*skiffv1.Endpoints{}
			for _, o := range ch.items {
				st.endpoints[objKey(o)] = o.(*skiffv1.Endpoints)
				st.dirty[objKey(o)] = true
			}
			break
		}
		k := objKey(ch.obj)
		if ch.typ == skiffv1.EventType_EVENT_TYPE_DELETED {
			delete(st.endpoints, k)
		} else if cur := st.endpoints[k]; cur == nil || cur.GetMetadata().GetResourceVersion() <= ch.obj.GetMetadata().GetResourceVersion() {
			st.endpoints[k] = ch.obj.(*skiffv1.Endpoints)
		}
		st.dirty[k] = true
	}
}

func (st *epState) putPod(p *skiffv1.Pod) {
	ns := p.GetMetadata().GetNamespace()
	if st.pods[ns] == nil {
		st.pods[ns] = map[string]*skiffv1.Pod{}
	}
	st.pods[ns][p.GetMetadata().GetName()] = p
}

// writeTimeout bounds each API call of a sync.
const writeTimeout = 10 * time.Second

// sync makes the endpoints of the service at key what they should be.
func (c *EndpointsController) sync(ctx context.Context, st *epState, key string) error {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	s := st.services[key]
	cur := st.endpoints[key]
	if s == nil {
		if cur == nil || cur.GetMetadata().GetLabels()[ManagedByLabel] != ManagedBy {
			return nil
		}
		m := cur.GetMetadata()
		_, err := c.Endpoints.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid()}))
		if err != nil && connect.CodeOf(err) != connect.CodeNotFound {
			return err
		}
		delete(st.endpoints, key)
		return nil
	}
	if !hasSelector(s) {
		return nil
	}
	var pods []*skiffv1.Pod
	for _, p := range st.pods[s.GetMetadata().GetNamespace()] {
		pods = append(pods, p)
	}
	want := BuildEndpoints(s, pods)
	if cur != nil && sameEndpoints(cur, want) {
		return nil
	}
	var (
		res *connect.Response[skiffv1.Endpoints]
		err error
	)
	if cur == nil {
		res, err = c.Endpoints.Create(ctx, connect.NewRequest(want))
	} else {
		want.Metadata.ResourceVersion = cur.GetMetadata().GetResourceVersion()
		want.Metadata.Uid = cur.GetMetadata().GetUid()
		want.Metadata.Annotations = cur.GetMetadata().GetAnnotations()
		res, err = c.Endpoints.Update(ctx, connect.NewRequest(want))
	}
	switch connect.CodeOf(err) {
	case connect.CodeAlreadyExists, connect.CodeAborted, connect.CodeNotFound:
		// Someone else wrote (another copy of this controller, or a
		// user): the watch brings the new version; try again then.
		return errors.Join(errStale, err)
	}
	if err != nil {
		return err
	}
	st.endpoints[key] = res.Msg
	return nil
}

var errStale = errors.New("endpoints changed under the controller")

// follow lists a kind and watches it from the list's version
// (kinds.ListWatch), sending each list (replace) and event to out, until
// ctx ends.
func follow[E any](ctx context.Context, log *slog.Logger, kind objKind, out chan<- change,
	list func(context.Context) ([]object, uint64, error),
	watch func(context.Context, uint64) (*connect.ServerStreamForClient[E], error),
	unpack func(*E) (skiffv1.EventType, object),
) {
	send := func(ch change) bool {
		select {
		case out <- ch:
			return true
		case <-ctx.Done():
			return false
		}
	}
	kinds.ListWatch(ctx, log, fmt.Sprint("kind ", int(kind)), time.Second, func(ctx context.Context) (uint64, error) {
		lctx, cancel := context.WithTimeout(ctx, writeTimeout)
		defer cancel()
		items, rev, err := list(lctx)
		if err == nil && !send(change{kind: kind, replace: true, items: items}) {
			err = ctx.Err()
		}
		return rev, err
	}, watch, func(w *connect.ServerStreamForClient[E]) (uint64, bool) {
		typ, obj := unpack(w.Msg())
		return obj.GetMetadata().GetResourceVersion(), skipEvent(typ, obj) || send(change{kind: kind, typ: typ, obj: obj})
	})
}

// skipEvent reports a watch event that carries no object: a bookmark.
func skipEvent(typ skiffv1.EventType, obj object) bool {
	return typ == skiffv1.EventType_EVENT_TYPE_BOOKMARK || typ == skiffv1.EventType_EVENT_TYPE_UNSPECIFIED || obj.GetMetadata().GetName() == ""
}
