package controllers

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

// GarbageCollector deletes the objects whose owners are all gone, as
// Kubernetes' garbage collector does with background cascading deletion
// (what `kubectl delete` does by default): the owner goes at once, then
// its dependents, then theirs (a Deployment, its ReplicaSets, their pods).
// An owner is gone when no object of its kind, name and uid exists; an
// owner of a kind this server does not know is taken to exist.
//
// It follows every kind (Kinds), keeping the uid of each object and an
// index from owner uid to dependents; an object without owner references
// costs one map entry. A deletion marks the dependents of the object
// deleted; a new dependent is looked at when it comes; every Resync all
// are looked at again. The cache only raises suspicion: before deleting,
// it reads each owner through the API, so an owner whose creation the
// cache has not seen yet keeps its dependents. A deletion names the
// dependent's uid, so a second copy of the collector, or an object
// created again under the same name, is harmless.
type GarbageCollector struct {
	Client ClientFunc
	// Kinds are the kinds followed: owners and dependents; kinds.All()
	// when nil.
	Kinds []*kinds.Kind
	// Batch is how long changes gather before the objects they touch are
	// looked at (DefaultEndpointsBatch when zero).
	Batch time.Duration
	// Resync is how often every dependent is looked at again (five
	// minutes when zero).
	Resync time.Duration
	Logger *slog.Logger
}

// gcObject is what the collector keeps of an object with owners.
type gcObject struct {
	kind     *kinds.Kind
	ns, name string
	owners   []*skiffv1.OwnerReference
	deleting bool
}

// gcState is the owner goroutine's.
type gcState struct {
	kindOf     map[string]*kinds.Kind     // every object's uid
	dependents map[string]map[string]bool // owner uid: dependent uids
	objects    map[string]*gcObject       // dependents by uid
	listed     map[*kinds.Kind]bool       // kinds whose first list came
	dirty      map[string]bool            // dependents to look at
}

func newGCState() *gcState {
	return &gcState{
		kindOf: map[string]*kinds.Kind{}, dependents: map[string]map[string]bool{},
		objects: map[string]*gcObject{}, listed: map[*kinds.Kind]bool{}, dirty: map[string]bool{},
	}
}

// put records o, of kind k.
func (st *gcState) put(k *kinds.Kind, o kinds.Object) {
	m := o.GetMetadata()
	uid := m.GetUid()
	st.forget(uid, false)
	st.kindOf[uid] = k
	if len(m.GetOwnerReferences()) == 0 {
		return
	}
	g := &gcObject{kind: k, ns: m.GetNamespace(), name: m.GetName(), owners: m.GetOwnerReferences(), deleting: m.GetDeletionTimestamp() != nil}
	st.objects[uid] = g
	for _, r := range g.owners {
		if st.dependents[r.GetUid()] == nil {
			st.dependents[r.GetUid()] = map[string]bool{}
		}
		st.dependents[r.GetUid()][uid] = true
	}
	st.dirty[uid] = true
}

// forget drops the object uid; gone says it was deleted, which marks its
// dependents.
func (st *gcState) forget(uid string, gone bool) {
	delete(st.kindOf, uid)
	if g := st.objects[uid]; g != nil {
		for _, r := range g.owners {
			delete(st.dependents[r.GetUid()], uid)
			if len(st.dependents[r.GetUid()]) == 0 {
				delete(st.dependents, r.GetUid())
			}
		}
		delete(st.objects, uid)
	}
	if !gone {
		return
	}
	delete(st.dirty, uid)
	for d := range st.dependents[uid] {
		st.dirty[d] = true
	}
}

func (st *gcState) apply(ch kindChange) {
	if ch.replace {
		st.listed[ch.kind] = true
		now := map[string]bool{}
		for _, o := range ch.items {
			now[o.GetMetadata().GetUid()] = true
		}
		for uid, k := range st.kindOf {
			if k == ch.kind && !now[uid] {
				st.forget(uid, true)
			}
		}
		for _, o := range ch.items {
			st.put(ch.kind, o)
		}
		return
	}
	if ch.typ == skiffv1.EventType_EVENT_TYPE_DELETED {
		st.forget(ch.obj.GetMetadata().GetUid(), true)
		return
	}
	st.put(ch.kind, ch.obj)
}

// orphaned reports whether every owner of g is gone by the cache.
func (st *gcState) orphaned(g *gcObject) bool {
	for _, r := range g.owners {
		if st.kindOf[r.GetUid()] != nil {
			return false
		}
	}
	return true
}

// Run collects garbage until ctx ends.
func (c *GarbageCollector) Run(ctx context.Context) {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ks := c.Kinds
	if ks == nil {
		ks = kinds.All()
	}
	batch, resync := c.Batch, c.Resync
	if batch == 0 {
		batch = DefaultEndpointsBatch
	}
	if resync == 0 {
		resync = 5 * time.Minute
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	changes := make(chan kindChange, 256)
	for _, k := range ks {
		wg.Go(func() { followKind(ctx, log, k, c.Client(k), changes) })
	}
	st := newGCState()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	armed := false
	tick := time.NewTicker(resync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ch := <-changes:
			st.apply(ch)
		case <-tick.C:
			for uid := range st.objects {
				st.dirty[uid] = true
			}
		case <-timer.C:
			armed = false
			if len(st.listed) < len(ks) {
				continue // an owner may be in a kind not listed yet
			}
			failed := false
			for uid := range st.dirty {
				delete(st.dirty, uid)
				g := st.objects[uid]
				if g == nil || g.deleting || !st.orphaned(g) {
					continue
				}
				if err := c.collect(ctx, log, uid, g); err != nil {
					if ctx.Err() != nil {
						return
					}
					log.Warn("garbage collector: delete dependent; trying again", "kind", g.kind.Kind, "object", g.kind.ID(g.ns, g.name), "err", err)
					st.dirty[uid] = true
					failed = true
				}
			}
			if failed {
				timer.Reset(time.Second)
				armed = true
			}
		}
		if len(st.dirty) > 0 && !armed {
			timer.Reset(batch)
			armed = true
		}
	}
}

// collect deletes the dependent uid once the API confirms that every
// owner is gone.
func (c *GarbageCollector) collect(ctx context.Context, log *slog.Logger, uid string, g *gcObject) error {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	for _, r := range g.owners {
		gone, err := c.ownerGone(ctx, g.ns, r)
		if err != nil || !gone {
			return err
		}
	}
	_, err := c.Client(g.kind).Delete(ctx, &skiffv1.DeleteRequest{Namespace: g.ns, Name: g.name, Uid: uid})
	switch connect.CodeOf(err) {
	case connect.CodeNotFound, connect.CodeAborted:
		return nil // gone, or replaced by another object of the name
	}
	if err != nil {
		return err
	}
	g.deleting = true
	log.Info("garbage collector: deleted an object whose owners are gone", "kind", g.kind.Kind, "object", g.kind.ID(g.ns, g.name))
	return nil
}

// ownerGone reads the owner r of an object in namespace ns.
func (c *GarbageCollector) ownerGone(ctx context.Context, ns string, r *skiffv1.OwnerReference) (bool, error) {
	k, err := kinds.ForManifest(r.GetApiVersion(), r.GetKind())
	if err != nil {
		return false, nil // a kind this server does not know: keep the dependent
	}
	if !k.Namespaced {
		ns = ""
	}
	o, err := c.Client(k).Get(ctx, ns, r.GetName())
	switch {
	case connect.CodeOf(err) == connect.CodeNotFound:
		return true, nil
	case err != nil:
		return false, fmt.Errorf("read owner %s %s: %w", r.GetKind(), k.ID(ns, r.GetName()), err)
	}
	return o.GetMetadata().GetUid() != r.GetUid(), nil
}
