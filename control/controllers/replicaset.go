package controllers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
)

// ReplicaSetController keeps each ReplicaSet's number of pods, as
// Kubernetes' replicaset controller: it creates pods of the template
// (named <replicaset>-<5 random characters>, owned by the ReplicaSet)
// while there are fewer active ones than spec.replicas, deletes the least
// useful while there are more (deleteOrder), adopts orphan pods its
// selector picks and releases owned pods it no longer picks, and reports
// replicas, ready and available pods and the generation it acted on in
// the status.
//
// It follows ReplicaSets and pods through list and watch, in one owner
// goroutine that holds both caches. What it has asked for and not yet
// seen through the watch (pods created, pods deleted) it counts as done,
// as Kubernetes' expectations do, so that a watch that lags never makes it
// overshoot. Every write is a compare-and-swap on the version last seen or
// a create of a fresh name, so a second copy running briefly during a
// leader change costs conflicts, never extra pods for long.
type ReplicaSetController struct {
	ReplicaSets skiffv1connect.ReplicaSetServiceClient
	Pods        skiffv1connect.PodServiceClient
	Logger      *slog.Logger
	// Resync is how often every ReplicaSet is looked at again without a
	// change, a safety net (five minutes when zero).
	Resync time.Duration
	// Now is the clock of availability (minReadySeconds); time.Now when nil.
	Now func() time.Time
	// Events reports the pods it creates and deletes (SuccessfulCreate,
	// FailedCreate, SuccessfulDelete); none when nil.
	Events EventRecorder
}

// expectationTTL is how long a create or delete that the watch has not
// shown is counted as done; after it the controller trusts its caches
// again (Kubernetes waits five minutes).
const expectationTTL = 2 * time.Minute

// writeParallelism bounds the creates or deletes one sync has in flight.
const writeParallelism = 16

// rsState is the owner goroutine's: the caches, the ReplicaSets to look
// at, and what is in flight.
type rsState struct {
	sets map[string]*skiffv1.ReplicaSet
	pods map[string]map[string]*skiffv1.Pod // by namespace, then name
	// byRS indexes the pods whose controller is a ReplicaSet, by its key
	// (namespace/name: of any uid, so an earlier ReplicaSet of the name
	// too), and orphans those without a controller, by namespace: a sync
	// looks at these, not at every pod of the namespace.
	byRS    map[string]map[string]*skiffv1.Pod
	orphans map[string]map[string]*skiffv1.Pod
	listed  map[objKind]bool
	q       *workQueue
	// creating and deleting are, per ReplicaSet key, the pods asked for
	// and not yet seen created or going, with when to stop waiting.
	creating map[string]map[string]time.Time
	deleting map[string]map[string]time.Time
}

func newRSState() *rsState {
	return &rsState{
		sets:     map[string]*skiffv1.ReplicaSet{},
		pods:     map[string]map[string]*skiffv1.Pod{},
		byRS:     map[string]map[string]*skiffv1.Pod{},
		orphans:  map[string]map[string]*skiffv1.Pod{},
		listed:   map[objKind]bool{},
		q:        newWorkQueue(),
		creating: map[string]map[string]time.Time{},
		deleting: map[string]map[string]time.Time{},
	}
}

// Run keeps ReplicaSets until ctx ends.
func (c *ReplicaSetController) Run(ctx context.Context) {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	resync := c.Resync
	if resync == 0 {
		resync = 5 * time.Minute
	}
	changes := make(chan change, 256)
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() { followReplicaSets(ctx, log, c.ReplicaSets, changes) })
	wg.Go(func() { followPods(ctx, log, c.Pods, changes) })

	st := newRSState()
	runLoop(ctx, changes, resync, st.q, st.apply,
		func() bool { return st.listed[kindReplicaSets] && st.listed[kindPods] },
		func() []string { return slices.Collect(maps.Keys(st.sets)) },
		func(key string) (time.Duration, error) { return c.sync(ctx, log, st, key) },
		func(key string, err error) {
			lvl := slog.LevelWarn
			if errors.Is(err, errStale) {
				lvl = slog.LevelDebug
			}
			log.Log(ctx, lvl, "sync replicaset; trying again", "replicaset", key, "err", err)
		})
}

// apply folds a change into the caches and queues the ReplicaSets it
// touches.
func (st *rsState) apply(ch change) {
	if ch.replace {
		st.listed[ch.kind] = true
	}
	switch ch.kind {
	case kindReplicaSets:
		if ch.replace {
			st.sets = map[string]*skiffv1.ReplicaSet{}
			for _, o := range ch.items {
				st.sets[objKey(o)] = o.(*skiffv1.ReplicaSet)
				st.q.add(objKey(o))
			}
			return
		}
		k := objKey(ch.obj)
		if ch.typ == skiffv1.EventType_EVENT_TYPE_DELETED {
			delete(st.sets, k)
			delete(st.creating, k)
			delete(st.deleting, k)
		} else if cur := st.sets[k]; cur == nil || cur.GetMetadata().GetResourceVersion() <= ch.obj.GetMetadata().GetResourceVersion() {
			st.sets[k] = ch.obj.(*skiffv1.ReplicaSet)
		}
		st.q.add(k)
	case kindPods:
		if ch.replace {
			st.pods = map[string]map[string]*skiffv1.Pod{}
			st.byRS = map[string]map[string]*skiffv1.Pod{}
			st.orphans = map[string]map[string]*skiffv1.Pod{}
			for _, o := range ch.items {
				p := o.(*skiffv1.Pod)
				st.put(p)
				st.observe(p, false)
			}
			for k := range st.sets {
				st.q.add(k)
			}
			return
		}
		p := ch.obj.(*skiffv1.Pod)
		ns, name := p.GetMetadata().GetNamespace(), p.GetMetadata().GetName()
		old := st.pods[ns][name]
		gone := ch.typ == skiffv1.EventType_EVENT_TYPE_DELETED
		if gone {
			st.remove(p)
		} else if old == nil || old.GetMetadata().GetResourceVersion() <= p.GetMetadata().GetResourceVersion() {
			st.put(p)
		}
		st.observe(p, gone)
		st.touch(p)
		if old != nil {
			st.touch(old)
		}
	}
}

// observe settles what was in flight for pod p: its creation has been seen,
// and its deletion once it is going or gone.
func (st *rsState) observe(p *skiffv1.Pod, gone bool) {
	ref := controllerOf(p.GetMetadata())
	if ref == nil || ref.GetKind() != kinds.ReplicaSet.Kind {
		return
	}
	k := p.GetMetadata().GetNamespace() + "/" + ref.GetName()
	name := p.GetMetadata().GetName()
	delete(st.creating[k], name)
	if gone || !podActive(p) {
		delete(st.deleting[k], name)
	}
}

// touch queues the ReplicaSets a change of p concerns: its controller, or
// for an orphan every ReplicaSet of its namespace that picks it.
func (st *rsState) touch(p *skiffv1.Pod) {
	ns := p.GetMetadata().GetNamespace()
	if ref := controllerOf(p.GetMetadata()); ref != nil {
		if ref.GetKind() == kinds.ReplicaSet.Kind {
			st.q.add(ns + "/" + ref.GetName())
		}
		return
	}
	for k, rs := range st.sets {
		if rs.GetMetadata().GetNamespace() == ns && kinds.SelectorMatches(rs.GetSpec().GetSelector(), p.GetMetadata().GetLabels()) {
			st.q.add(k)
		}
	}
}

// indexKey is where p is indexed: its ReplicaSet's key in byRS, or its
// namespace in orphans; "" when it has another kind of controller.
func indexKey(p *skiffv1.Pod) (key string, orphan bool) {
	ns := p.GetMetadata().GetNamespace()
	ref := controllerOf(p.GetMetadata())
	switch {
	case ref == nil:
		return ns, true
	case ref.GetKind() == kinds.ReplicaSet.Kind:
		return ns + "/" + ref.GetName(), false
	}
	return "", false
}

// put caches p, in place of the version before it.
func (st *rsState) put(p *skiffv1.Pod) {
	if old := st.pods[p.GetMetadata().GetNamespace()][p.GetMetadata().GetName()]; old != nil {
		st.unindex(old)
	}
	putPod(st.pods, p)
	key, orphan := indexKey(p)
	idx := st.byRS
	if orphan {
		idx = st.orphans
	}
	if key == "" {
		return
	}
	if idx[key] == nil {
		idx[key] = map[string]*skiffv1.Pod{}
	}
	idx[key][p.GetMetadata().GetName()] = p
}

// remove forgets p.
func (st *rsState) remove(p *skiffv1.Pod) {
	ns, name := p.GetMetadata().GetNamespace(), p.GetMetadata().GetName()
	if old := st.pods[ns][name]; old != nil {
		st.unindex(old)
	}
	delete(st.pods[ns], name)
}

func (st *rsState) unindex(p *skiffv1.Pod) {
	key, orphan := indexKey(p)
	idx := st.byRS
	if orphan {
		idx = st.orphans
	}
	if m := idx[key]; m != nil {
		delete(m, p.GetMetadata().GetName())
		if len(m) == 0 {
			delete(idx, key)
		}
	}
}

func putPod(pods map[string]map[string]*skiffv1.Pod, p *skiffv1.Pod) {
	ns := p.GetMetadata().GetNamespace()
	if pods[ns] == nil {
		pods[ns] = map[string]*skiffv1.Pod{}
	}
	pods[ns][p.GetMetadata().GetName()] = p
}

// inFlight is the names of m whose deadline has not passed; it forgets
// the rest.
func inFlight(m map[string]time.Time, now time.Time) map[string]bool {
	out := map[string]bool{}
	for name, until := range m {
		if now.After(until) {
			delete(m, name)
			continue
		}
		out[name] = true
	}
	return out
}

// sync brings the ReplicaSet at key toward its replicas and reports its
// status. It returns how long until it should look again (a pod that will
// become available), 0 for no need.
func (c *ReplicaSetController) sync(ctx context.Context, log *slog.Logger, st *rsState, key string) (time.Duration, error) {
	rs := st.sets[key]
	if rs == nil || rs.GetMetadata().GetDeletionTimestamp() != nil {
		return 0, nil // its pods are the garbage collector's
	}
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	now := c.Now()
	m := rs.GetMetadata()
	sel := rs.GetSpec().GetSelector()
	var owned []*skiffv1.Pod
	var errs []error
	// The pods of this ReplicaSet's name (its own, and an earlier one's)
	// and the orphans of its namespace; copied, as adoption re-indexes.
	candidates := slices.Collect(maps.Values(st.byRS[key]))
	candidates = slices.AppendSeq(candidates, maps.Values(st.orphans[m.GetNamespace()]))
	for _, p := range candidates {
		ref := controllerOf(p.GetMetadata())
		picks := kinds.SelectorMatches(sel, p.GetMetadata().GetLabels())
		switch {
		case ref != nil && ref.GetUid() == m.GetUid() && picks:
			if podActive(p) {
				owned = append(owned, p)
			}
		case ref != nil && ref.GetUid() == m.GetUid():
			if err := c.setOwner(ctx, st, p, nil); err != nil {
				errs = append(errs, err)
			}
		case (ref == nil || st.formerSelf(ref, m)) && picks && podActive(p):
			if err := c.setOwner(ctx, st, p, rs); err != nil {
				errs = append(errs, err)
				continue
			}
			owned = append(owned, st.pods[m.GetNamespace()][p.GetMetadata().GetName()])
		}
	}
	if st.creating[key] == nil {
		st.creating[key] = map[string]time.Time{}
		st.deleting[key] = map[string]time.Time{}
	}
	plan := planReplicas(kinds.Replicas(rs.GetSpec().Replicas), owned, inFlight(st.creating[key], now), inFlight(st.deleting[key], now))
	if plan.create > 0 {
		log.Debug("creating pods", "replicaset", key, "count", plan.create)
		errs = append(errs, c.createPods(ctx, st, key, rs, plan.create, now))
	}
	if len(plan.remove) > 0 {
		log.Debug("deleting pods", "replicaset", key, "count", len(plan.remove))
		errs = append(errs, c.deletePods(ctx, st, key, rs, plan.remove, now))
	}
	status, wait := rsStatus(rs, owned, now)
	if !proto.Equal(status, rs.GetStatus()) {
		up := proto.Clone(rs).(*skiffv1.ReplicaSet)
		up.Status = status
		res, err := c.ReplicaSets.UpdateStatus(ctx, connect.NewRequest(up))
		switch {
		case connect.CodeOf(err) == connect.CodeAborted || connect.CodeOf(err) == connect.CodeNotFound:
			errs = append(errs, errors.Join(errStale, err))
		case err != nil:
			errs = append(errs, fmt.Errorf("update status: %w", err))
		default:
			st.sets[key] = res.Msg
		}
	}
	return wait, errors.Join(errs...)
}

// formerSelf says whether ref names an earlier ReplicaSet of m's name that
// is gone: its pods are m's to adopt (left by a delete while there is no
// garbage collector).
func (st *rsState) formerSelf(ref *skiffv1.OwnerReference, m *skiffv1.ObjectMeta) bool {
	if ref.GetKind() != kinds.ReplicaSet.Kind || ref.GetName() != m.GetName() || ref.GetUid() == m.GetUid() {
		return false
	}
	for _, rs := range st.sets {
		if rs.GetMetadata().GetUid() == ref.GetUid() {
			return false
		}
	}
	return true
}

// setOwner makes rs the controller of p (adoption), or with rs nil drops
// p's controller reference (release), and caches what was written.
func (c *ReplicaSetController) setOwner(ctx context.Context, st *rsState, p *skiffv1.Pod, rs *skiffv1.ReplicaSet) error {
	up := proto.Clone(p).(*skiffv1.Pod)
	m := up.Metadata
	m.OwnerReferences = slices.DeleteFunc(m.OwnerReferences, func(r *skiffv1.OwnerReference) bool { return r.GetController() })
	if rs != nil {
		m.OwnerReferences = append(m.OwnerReferences, ownerRef(kinds.ReplicaSet, rs.GetMetadata()))
	}
	res, err := c.Pods.Update(ctx, connect.NewRequest(up))
	switch connect.CodeOf(err) {
	case connect.CodeAborted, connect.CodeNotFound:
		return errors.Join(errStale, err)
	}
	if err != nil {
		return fmt.Errorf("update owner of pod %s: %w", m.GetName(), err)
	}
	st.put(res.Msg)
	return nil
}

// createPods creates n pods of rs in its lowest free slots (podName),
// counting each as in flight from before it is asked for until the watch
// shows it (or the create fails). A name another writer took first (a
// second copy of this controller) is this ReplicaSet's pod all the same,
// and counts as made.
func (c *ReplicaSetController) createPods(ctx context.Context, st *rsState, key string, rs *skiffv1.ReplicaSet, n int, now time.Time) error {
	ns := rs.GetMetadata().GetNamespace()
	names := freeNames(rs, n, func(name string) bool {
		_, seen := st.pods[ns][name]
		_, asked := st.creating[key][name]
		return seen || asked
	})
	for _, name := range names {
		st.creating[key][name] = now.Add(expectationTTL)
	}
	failed := make([]error, n)
	parallel(n, func(i int) {
		_, err := c.Pods.Create(ctx, connect.NewRequest(newPod(rs, names[i])))
		if connect.CodeOf(err) == connect.CodeAlreadyExists {
			// Ours (made by another copy) or someone else's?
			res, gerr := c.Pods.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Namespace: ns, Name: names[i]}))
			if gerr == nil && controllerOf(res.Msg.GetMetadata()).GetUid() == rs.GetMetadata().GetUid() {
				err = nil
			} else {
				err = errors.Join(errStale, err)
			}
		}
		failed[i] = err
	})
	// The owner goroutine waited here, so no event settled these yet.
	var errs []error
	for i, err := range failed {
		if err != nil {
			delete(st.creating[key], names[i])
			errs = append(errs, fmt.Errorf("create pod %s: %w", names[i], err))
			if !errors.Is(err, errStale) {
				record(c.Events, rs, "Warning", "FailedCreate", "Error creating: %s", connectMessage(err))
			}
			continue
		}
		record(c.Events, rs, "Normal", "SuccessfulCreate", "Created pod: %s", names[i])
	}
	return errors.Join(errs...)
}

// deletePods deletes pods, counting each as in flight until the watch
// shows it going.
func (c *ReplicaSetController) deletePods(ctx context.Context, st *rsState, key string, rs *skiffv1.ReplicaSet, pods []*skiffv1.Pod, now time.Time) error {
	for _, p := range pods {
		st.deleting[key][p.GetMetadata().GetName()] = now.Add(expectationTTL)
	}
	failed := make([]error, len(pods))
	parallel(len(pods), func(i int) {
		m := pods[i].GetMetadata()
		_, err := c.Pods.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid()}))
		if connect.CodeOf(err) == connect.CodeNotFound {
			err = nil
		}
		failed[i] = err
	})
	var errs []error
	for i, err := range failed {
		if err != nil {
			delete(st.deleting[key], pods[i].GetMetadata().GetName())
			errs = append(errs, fmt.Errorf("delete pod %s: %w", pods[i].GetMetadata().GetName(), err))
			record(c.Events, rs, "Warning", "FailedDelete", "Error deleting: %s", connectMessage(err))
			continue
		}
		record(c.Events, rs, "Normal", "SuccessfulDelete", "Deleted pod: %s", pods[i].GetMetadata().GetName())
	}
	return errors.Join(errs...)
}

// parallel runs f(0..n-1), at most writeParallelism at a time, and waits.
func parallel(n int, f func(i int)) {
	sem := make(chan struct{}, writeParallelism)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			f(i)
		})
	}
	wg.Wait()
}
