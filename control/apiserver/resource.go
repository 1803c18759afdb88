package apiserver

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/store"
)

// object is a resource message: every kind has metadata.
type object interface {
	proto.Message
	GetMetadata() *skiffv1.ObjectMeta
}

// kind describes how one resource kind is kept in the store. The generic
// create/get/list/update/delete/watch below serve every kind through it.
type kind[T object] struct {
	name       string // singular, lower case: "pod"
	plural     string // key prefix: "pods"
	namespaced bool
	// nameRule checks metadata.name; RFC 1123 subdomain when nil.
	nameRule func(fe *fieldErrors, path, name string)
	new      func() T
	// validate reports every problem with an object about to be written.
	validate func(obj T) fieldErrors
	// defaults fills in what the user may leave out, on create and update.
	defaults func(obj T)
	// initial sets the status of a new object.
	initial func(obj T)
	// checkUpdate rejects changes to fields that may not change.
	checkUpdate func(old, obj T) fieldErrors
}

func (k *kind[T]) key(ns, name string) string {
	if k.namespaced {
		return "/" + k.plural + "/" + ns + "/" + name
	}
	return "/" + k.plural + "/" + name
}

// prefix selects every object of the kind, or of one namespace when ns is set.
func (k *kind[T]) prefix(ns string) string {
	if k.namespaced && ns != "" {
		return "/" + k.plural + "/" + ns + "/"
	}
	return "/" + k.plural + "/"
}

func (k *kind[T]) id(m *skiffv1.ObjectMeta) string {
	if k.namespaced {
		return m.GetNamespace() + "/" + m.GetName()
	}
	return m.GetName()
}

// decode reads a stored value; the resourceVersion is the store's revision
// of the key, never a stored field.
func (k *kind[T]) decode(kv store.KV) (T, error) {
	obj := k.new()
	if err := proto.Unmarshal(kv.Value, obj); err != nil {
		return obj, fmt.Errorf("decode %s %s: %w", k.name, kv.Key, err)
	}
	obj.GetMetadata().ResourceVersion = kv.ModRevision
	return obj, nil
}

func encode(obj object) ([]byte, error) {
	obj = proto.Clone(obj).(object)
	obj.GetMetadata().ResourceVersion = 0
	return proto.MarshalOptions{Deterministic: true}.Marshal(obj)
}

// resources is the generic half of the API server, shared by every kind.
type resources struct {
	store Store
	now   func() time.Time
	// nsExists is asked before a namespaced object is created.
	nsExists func(ctx context.Context, ns string) error
}

func create[T object](ctx context.Context, r *resources, k *kind[T], obj T, dryRun bool) (T, error) {
	var zero T
	if any(obj) == nil || obj.GetMetadata() == nil {
		return zero, fieldErrors{"metadata: required value"}.err(k.name, "")
	}
	obj = proto.Clone(obj).(T)
	m := obj.GetMetadata()
	if k.namespaced && m.Namespace == "" {
		m.Namespace = "default"
	}
	if m.ResourceVersion != 0 {
		return zero, fieldErrors{"metadata.resourceVersion: must not be set on create"}.err(k.name, m.GetName())
	}
	if k.defaults != nil {
		k.defaults(obj)
	}
	if k.initial != nil {
		k.initial(obj)
	}
	if err := validateObject(k, obj); err != nil {
		return zero, err
	}
	if k.namespaced && r.nsExists != nil {
		if err := r.nsExists(ctx, m.Namespace); err != nil {
			return zero, err
		}
	}
	m.Uid = newUID()
	m.CreationTimestamp = timestamppb.New(r.now())
	if dryRun {
		return obj, nil
	}
	val, err := encode(obj)
	if err != nil {
		return zero, toConnect(err)
	}
	kv, err := r.store.Create(ctx, k.key(m.Namespace, m.Name), val)
	if err != nil {
		return zero, objectErr("create", k.name, k.id(m), err)
	}
	m.ResourceVersion = kv.ModRevision
	return obj, nil
}

func validateObject[T object](k *kind[T], obj T) error {
	fe := fieldErrors{}
	if err := checkObjectSize(obj); err != nil {
		fe = append(fe, err.Error())
	}
	rule := k.nameRule
	if rule == nil {
		rule = validateSubdomain
	}
	validateMeta(&fe, obj.GetMetadata(), k.namespaced, rule)
	if k.validate != nil {
		fe = append(fe, k.validate(obj)...)
	}
	return fe.err(k.name, obj.GetMetadata().GetName())
}

func get[T object](ctx context.Context, r *resources, k *kind[T], ns, name string) (T, error) {
	var zero T
	if name == "" {
		return zero, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("name: required value"))
	}
	if k.namespaced && ns == "" {
		ns = "default"
	}
	kv, err := r.store.Get(ctx, k.key(ns, name))
	if err != nil {
		return zero, objectErr("get", k.name, k.id(&skiffv1.ObjectMeta{Namespace: ns, Name: name}), err)
	}
	obj, err := k.decode(kv)
	return obj, toConnect(err)
}

func list[T object](ctx context.Context, r *resources, k *kind[T], ns string, keep func(T) bool) ([]T, uint64, error) {
	kvs, rev, err := r.store.List(ctx, k.prefix(ns))
	if err != nil {
		return nil, 0, toConnect(fmt.Errorf("list %s: %w", k.plural, err))
	}
	out := make([]T, 0, len(kvs))
	for _, kv := range kvs {
		obj, err := k.decode(kv)
		if err != nil {
			return nil, 0, toConnect(err)
		}
		if keep == nil || keep(obj) {
			out = append(out, obj)
		}
	}
	return out, rev, nil
}

// update replaces an object. A non-zero metadata.resourceVersion makes it a
// compare-and-swap: a stale version gets Aborted (conflict). uid and
// creationTimestamp always come from the stored object.
func update[T object](ctx context.Context, r *resources, k *kind[T], obj T, dryRun bool) (T, error) {
	var zero T
	if any(obj) == nil || obj.GetMetadata() == nil {
		return zero, fieldErrors{"metadata: required value"}.err(k.name, "")
	}
	obj = proto.Clone(obj).(T)
	m := obj.GetMetadata()
	if k.namespaced && m.Namespace == "" {
		m.Namespace = "default"
	}
	old, err := get(ctx, r, k, m.Namespace, m.Name)
	if err != nil {
		return zero, err
	}
	om := old.GetMetadata()
	if m.ResourceVersion != 0 && m.ResourceVersion != om.ResourceVersion {
		return zero, connect.NewError(connect.CodeAborted, fmt.Errorf(
			"update %s %q: %w: the object has been modified (resourceVersion %d, yours %d); get it and try again",
			k.name, k.id(m), store.ErrConflict, om.ResourceVersion, m.ResourceVersion))
	}
	if m.Uid != "" && m.Uid != om.Uid {
		return zero, fieldErrors{fmt.Sprintf("metadata.uid: field is immutable (is %q)", om.Uid)}.err(k.name, m.Name)
	}
	m.Uid = om.Uid
	m.CreationTimestamp = om.CreationTimestamp
	if k.defaults != nil {
		k.defaults(obj)
	}
	if err := validateObject(k, obj); err != nil {
		return zero, err
	}
	if k.checkUpdate != nil {
		if err := k.checkUpdate(old, obj).err(k.name, m.Name); err != nil {
			return zero, err
		}
	}
	if dryRun {
		return obj, nil
	}
	val, err := encode(obj)
	if err != nil {
		return zero, toConnect(err)
	}
	kv, err := r.store.Update(ctx, k.key(m.Namespace, m.Name), val, om.ResourceVersion)
	if err != nil {
		return zero, objectErr("update", k.name, k.id(m), err)
	}
	m.ResourceVersion = kv.ModRevision
	return obj, nil
}

func remove[T object](ctx context.Context, r *resources, k *kind[T], ns, name string, rev uint64) (T, error) {
	var zero T
	if k.namespaced && ns == "" {
		ns = "default"
	}
	if name == "" {
		return zero, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("name: required value"))
	}
	kv, err := r.store.Delete(ctx, k.key(ns, name), rev)
	if err != nil {
		return zero, objectErr("delete", k.name, k.id(&skiffv1.ObjectMeta{Namespace: ns, Name: name}), err)
	}
	obj, err := k.decode(kv)
	return obj, toConnect(err)
}

// watch streams the kind's changes after rev to send until ctx ends. keep
// filters objects; an object that stops matching is sent as DELETED, as a
// Kubernetes field-selector watch does, so the watcher forgets it.
func watch[T object](ctx context.Context, r *resources, k *kind[T], ns string, rev uint64, keep func(T) bool, send func(skiffv1.EventType, T) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := r.store.Watch(ctx, k.prefix(ns), rev)
	if err != nil {
		return toConnect(fmt.Errorf("watch %s: %w", k.plural, err))
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return connect.NewError(connect.CodeUnavailable, fmt.Errorf("watch %s: the watch fell behind and was closed; list and watch again", k.plural))
			}
			typ, obj, ok, err := translate(k, ev, keep)
			if err != nil {
				return toConnect(err)
			}
			if !ok {
				continue
			}
			if err := send(typ, obj); err != nil {
				return err
			}
		}
	}
}

func translate[T object](k *kind[T], ev store.Event, keep func(T) bool) (skiffv1.EventType, T, bool, error) {
	var zero T
	obj, err := k.decode(ev.KV)
	if err != nil {
		return 0, zero, false, err
	}
	obj.GetMetadata().ResourceVersion = ev.Revision
	matches := func(o T) bool { return keep == nil || keep(o) }
	if ev.Type == store.EventDelete {
		return skiffv1.EventType_EVENT_TYPE_DELETED, obj, matches(obj), nil
	}
	var prev T
	hadPrev := false
	if ev.PrevKV != nil {
		if prev, err = k.decode(*ev.PrevKV); err != nil {
			return 0, zero, false, err
		}
		hadPrev = matches(prev)
	}
	now := matches(obj)
	switch {
	case now && hadPrev:
		return skiffv1.EventType_EVENT_TYPE_MODIFIED, obj, true, nil
	case now:
		return skiffv1.EventType_EVENT_TYPE_ADDED, obj, true, nil
	case hadPrev:
		return skiffv1.EventType_EVENT_TYPE_DELETED, obj, true, nil
	}
	return 0, zero, false, nil
}

// newUID returns a random RFC 4122 version 4 UUID.
func newUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := fmt.Sprintf("%x", b[:])
	return strings.Join([]string{h[0:8], h[8:12], h[12:16], h[16:20], h[20:32]}, "-")
}
