package controllers

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

// NamespaceFinalizer is the finalizer the API server puts on a namespace
// being deleted; this controller removes it.
const NamespaceFinalizer = "kubernetes"

// NamespaceController empties the namespaces being deleted, as
// Kubernetes' namespace controller: for a namespace with a
// deletionTimestamp and the "kubernetes" finalizer, it deletes every
// object of every namespaced kind in it (pods gracefully: their nodes stop
// them first), and once none is left removes the finalizer, so that the
// namespace goes. The API server refuses new objects in such a namespace,
// and its final removal checks that no pod or service is left.
//
// It follows namespaces, and looks at each one being deleted again every
// Every until it is gone.
type NamespaceController struct {
	Client ClientFunc
	// Kinds are the kinds emptied (the namespaced ones); kinds.All() when
	// nil.
	Kinds []*kinds.Kind
	// Every is how often a namespace being emptied is looked at again (a
	// second when zero).
	Every  time.Duration
	Logger *slog.Logger
}

// Run empties namespaces being deleted until ctx ends.
func (c *NamespaceController) Run(ctx context.Context) {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	every := c.Every
	if every == 0 {
		every = time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	changes := make(chan kindChange, 64)
	wg.Go(func() { followKind(ctx, log, kinds.Namespace, c.Client(kinds.Namespace), changes) })
	deleting := map[string]*skiffv1.Namespace{}
	track := func(o kinds.Object) {
		ns := o.(*skiffv1.Namespace)
		name := ns.GetMetadata().GetName()
		delete(deleting, name)
		if ns.GetMetadata().GetDeletionTimestamp() != nil && slices.Contains(ns.GetMetadata().GetFinalizers(), NamespaceFinalizer) {
			deleting[name] = ns
		}
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ch := <-changes:
			switch {
			case ch.replace:
				deleting = map[string]*skiffv1.Namespace{}
				for _, o := range ch.items {
					track(o)
				}
			case ch.typ == skiffv1.EventType_EVENT_TYPE_DELETED:
				delete(deleting, ch.obj.GetMetadata().GetName())
			default:
				track(ch.obj)
				if deleting[ch.obj.GetMetadata().GetName()] == nil {
					continue
				}
			}
		case <-tick.C:
		}
		for name, ns := range deleting {
			done, err := c.empty(ctx, log, ns)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				log.Warn("namespace controller: empty namespace; trying again", "ns", name, "err", err)
				continue
			}
			if done {
				delete(deleting, name) // its removal comes by the watch
			}
		}
	}
}

// empty deletes what is left in ns and, once nothing is, removes the
// finalizer. It reports whether it did.
func (c *NamespaceController) empty(ctx context.Context, log *slog.Logger, ns *skiffv1.Namespace) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	name := ns.GetMetadata().GetName()
	ks := c.Kinds
	if ks == nil {
		ks = kinds.All()
	}
	left := 0
	for _, k := range ks {
		if !k.Namespaced {
			continue
		}
		cl := c.Client(k)
		items, _, err := cl.List(ctx, &skiffv1.ListRequest{Namespace: name})
		if err != nil {
			return false, fmt.Errorf("list %s: %w", k.Plural, err)
		}
		for _, o := range items {
			m := o.GetMetadata()
			if m.GetDeletionTimestamp() != nil {
				left++ // going: its node or finalizers finish it
				continue
			}
			out, err := cl.Delete(ctx, &skiffv1.DeleteRequest{Namespace: name, Name: m.GetName(), Uid: m.GetUid()})
			switch {
			case connect.CodeOf(err) == connect.CodeNotFound:
			case connect.CodeOf(err) == connect.CodeAborted:
				left++ // replaced meanwhile: the next look deletes it
			case err != nil:
				return false, fmt.Errorf("delete %s %s: %w", k.Singular, k.ID(name, m.GetName()), err)
			case out.GetMetadata().GetDeletionTimestamp() != nil:
				left++ // marked: it goes once its node or finalizers let it
			}
		}
	}
	if left > 0 {
		return false, nil
	}
	up := proto.Clone(ns).(*skiffv1.Namespace)
	up.Metadata.Finalizers = slices.DeleteFunc(up.Metadata.Finalizers, func(f string) bool { return f == NamespaceFinalizer })
	_, err := c.Client(kinds.Namespace).Update(ctx, up, false)
	switch connect.CodeOf(err) {
	case connect.CodeNotFound:
		return true, nil
	case connect.CodeAborted, connect.CodeFailedPrecondition:
		// Changed since read, or something came in meanwhile (the
		// removal checks): look again.
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("remove finalizer %q: %w", NamespaceFinalizer, err)
	}
	log.Info("namespace controller: namespace emptied; finalizer removed", "ns", name)
	return true, nil
}
