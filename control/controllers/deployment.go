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

// DeploymentController rolls deployments out, as Kubernetes' deployment
// controller: each template is a ReplicaSet of the deployment's, named
// <deployment>-<pod-template-hash>; a template change makes a new one and
// moves the pods over to it, by RollingUpdate (within maxSurge and
// maxUnavailable) or Recreate (the old pods gone first); a paused
// deployment only scales; old ReplicaSets beyond revisionHistoryLimit are
// pruned; the status counts the pods of every ReplicaSet and holds the
// Available and Progressing conditions (ProgressDeadlineExceeded when a
// rollout stalls). The decisions are planDeployment's.
//
// It follows deployments, ReplicaSets and pods (for Recreate) in one owner
// goroutine, like the ReplicaSet controller, and writes with
// compare-and-swap on the versions it has seen.
type DeploymentController struct {
	Deployments skiffv1connect.DeploymentServiceClient
	ReplicaSets skiffv1connect.ReplicaSetServiceClient
	Pods        skiffv1connect.PodServiceClient
	Logger      *slog.Logger
	// Resync is how often every deployment is looked at again without a
	// change (five minutes when zero).
	Resync time.Duration
	// Now is the clock of the progress deadline; time.Now when nil.
	Now func() time.Time
	// Events reports the ReplicaSets it scales (ScalingReplicaSet); none
	// when nil.
	Events EventRecorder
}

type deployState struct {
	deploys map[string]*skiffv1.Deployment
	sets    map[string]*skiffv1.ReplicaSet
	pods    map[string]map[string]*skiffv1.Pod
	listed  map[objKind]bool
	q       *workQueue
}

// Run keeps deployments until ctx ends.
func (c *DeploymentController) Run(ctx context.Context) {
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
	wg.Go(func() { followDeployments(ctx, log, c.Deployments, changes) })
	wg.Go(func() { followReplicaSets(ctx, log, c.ReplicaSets, changes) })
	wg.Go(func() { followPods(ctx, log, c.Pods, changes) })
	st := &deployState{
		deploys: map[string]*skiffv1.Deployment{},
		sets:    map[string]*skiffv1.ReplicaSet{},
		pods:    map[string]map[string]*skiffv1.Pod{},
		listed:  map[objKind]bool{},
		q:       newWorkQueue(),
	}
	runLoop(ctx, changes, resync, st.q, st.apply,
		func() bool { return st.listed[kindDeployments] && st.listed[kindReplicaSets] && st.listed[kindPods] },
		func() []string { return slices.Collect(maps.Keys(st.deploys)) },
		func(key string) (time.Duration, error) { return c.sync(ctx, log, st, key) },
		func(key string, err error) {
			lvl := slog.LevelWarn
			if errors.Is(err, errStale) {
				lvl = slog.LevelDebug
			}
			log.Log(ctx, lvl, "sync deployment; trying again", "deployment", key, "err", err)
		})
}

// apply folds a change into the caches and queues the deployments it
// touches.
func (st *deployState) apply(ch change) {
	if ch.replace {
		st.listed[ch.kind] = true
	}
	switch ch.kind {
	case kindDeployments:
		if ch.replace {
			st.deploys = map[string]*skiffv1.Deployment{}
			for _, o := range ch.items {
				st.deploys[objKey(o)] = o.(*skiffv1.Deployment)
				st.q.add(objKey(o))
			}
			return
		}
		k := objKey(ch.obj)
		if ch.typ == skiffv1.EventType_EVENT_TYPE_DELETED {
			delete(st.deploys, k)
		} else if cur := st.deploys[k]; cur == nil || cur.GetMetadata().GetResourceVersion() <= ch.obj.GetMetadata().GetResourceVersion() {
			st.deploys[k] = ch.obj.(*skiffv1.Deployment)
		}
		st.q.add(k)
	case kindReplicaSets:
		if ch.replace {
			st.sets = map[string]*skiffv1.ReplicaSet{}
			for _, o := range ch.items {
				st.sets[objKey(o)] = o.(*skiffv1.ReplicaSet)
			}
			for k := range st.deploys {
				st.q.add(k)
			}
			return
		}
		k := objKey(ch.obj)
		old := st.sets[k]
		if ch.typ == skiffv1.EventType_EVENT_TYPE_DELETED {
			delete(st.sets, k)
		} else if old == nil || old.GetMetadata().GetResourceVersion() <= ch.obj.GetMetadata().GetResourceVersion() {
			st.sets[k] = ch.obj.(*skiffv1.ReplicaSet)
		}
		st.touchOwner(ch.obj.GetMetadata())
	case kindPods:
		if ch.replace {
			st.pods = map[string]map[string]*skiffv1.Pod{}
			for _, o := range ch.items {
				putPod(st.pods, o.(*skiffv1.Pod))
			}
			return
		}
		p := ch.obj.(*skiffv1.Pod)
		ns, name := p.GetMetadata().GetNamespace(), p.GetMetadata().GetName()
		if ch.typ == skiffv1.EventType_EVENT_TYPE_DELETED {
			delete(st.pods[ns], name)
		} else {
			putPod(st.pods, p)
		}
		// Only a Recreate waits on pods: the deployment of the pod's
		// ReplicaSet is looked at when it is one.
		if ref := controllerOf(p.GetMetadata()); ref != nil && ref.GetKind() == kinds.ReplicaSet.Kind {
			if rs := st.sets[ns+"/"+ref.GetName()]; rs != nil {
				if dref := controllerOf(rs.GetMetadata()); dref != nil && dref.GetKind() == kinds.Deployment.Kind {
					if d := st.deploys[ns+"/"+dref.GetName()]; d != nil && d.GetSpec().GetStrategy().GetType() == strategyRecreate {
						st.q.add(ns + "/" + dref.GetName())
					}
				}
			}
		}
	}
}

// touchOwner queues the deployment that controls an object.
func (st *deployState) touchOwner(m *skiffv1.ObjectMeta) {
	if ref := controllerOf(m); ref != nil && ref.GetKind() == kinds.Deployment.Kind {
		st.q.add(m.GetNamespace() + "/" + ref.GetName())
	}
}

// sync carries out planDeployment's plan for the deployment at key.
func (c *DeploymentController) sync(ctx context.Context, log *slog.Logger, st *deployState, key string) (time.Duration, error) {
	d := st.deploys[key]
	if d == nil || d.GetMetadata().GetDeletionTimestamp() != nil {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	m := d.GetMetadata()
	var owned []*skiffv1.ReplicaSet
	var errs []error
	for _, rs := range st.sets {
		if rs.GetMetadata().GetNamespace() != m.GetNamespace() {
			continue
		}
		switch {
		case controllerOf(rs.GetMetadata()).GetUid() == m.GetUid():
			owned = append(owned, rs)
		case st.orphan(rs, d):
			adopted, err := c.adopt(ctx, rs, d)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			st.sets[objKey(adopted)] = adopted
			owned = append(owned, adopted)
		}
	}
	slices.SortFunc(owned, func(a, b *skiffv1.ReplicaSet) int {
		return a.GetMetadata().GetCreationTimestamp().AsTime().Compare(b.GetMetadata().GetCreationTimestamp().AsTime())
	})
	oldPods := false
	old := map[string]bool{}
	for _, rs := range owned {
		if !sameTemplate(rs.GetSpec().GetTemplate(), d.GetSpec().GetTemplate()) {
			old[rs.GetMetadata().GetUid()] = true
		}
	}
	recreate := d.GetSpec().GetStrategy().GetType() == strategyRecreate
	for _, p := range st.pods[m.GetNamespace()] {
		if !recreate || len(old) == 0 {
			break // only a Recreate waits for old pods to go
		}
		ph := p.GetStatus().GetPhase()
		if ref := controllerOf(p.GetMetadata()); ref != nil && old[ref.GetUid()] && ph != "Succeeded" && ph != "Failed" {
			oldPods = true
			break
		}
	}
	plan := planDeployment(d, owned, oldPods, c.Now())
	stale := func(err error) error {
		switch connect.CodeOf(err) {
		case connect.CodeAborted, connect.CodeNotFound, connect.CodeAlreadyExists:
			return errors.Join(errStale, err)
		}
		return err
	}
	if plan.create != nil {
		if other := st.sets[objKey(plan.create)]; other != nil {
			// Not this template's, or not this deployment's: Kubernetes
			// would take the next hash (collisionCount); skiff says so.
			return 0, fmt.Errorf("replicaset %s exists but is not deployment %s's for its template (a hash collision, or made by hand): delete or rename it", other.GetMetadata().GetName(), m.GetName())
		}
		res, err := c.ReplicaSets.Create(ctx, connect.NewRequest(plan.create))
		if err != nil {
			return 0, fmt.Errorf("create replicaset %s: %w", plan.create.GetMetadata().GetName(), stale(err))
		}
		log.Info("created replicaset", "deployment", key, "replicaset", res.Msg.GetMetadata().GetName(), "replicas", replicasOf(res.Msg))
		st.sets[objKey(res.Msg)] = res.Msg
		record(c.Events, d, "Normal", "ScalingReplicaSet", "Scaled up replica set %s from 0 to %d", res.Msg.GetMetadata().GetName(), replicasOf(res.Msg))
	}
	for _, rs := range plan.update {
		was := replicasOf(st.sets[objKey(rs)])
		res, err := c.ReplicaSets.Update(ctx, connect.NewRequest(rs))
		if err != nil {
			errs = append(errs, fmt.Errorf("scale replicaset %s: %w", rs.GetMetadata().GetName(), stale(err)))
			continue
		}
		if now := replicasOf(rs); now != was {
			dir := "up"
			if now < was {
				dir = "down"
			}
			record(c.Events, d, "Normal", "ScalingReplicaSet", "Scaled %s replica set %s from %d to %d", dir, rs.GetMetadata().GetName(), was, now)
		}
		log.Debug("scaled replicaset", "deployment", key, "replicaset", rs.GetMetadata().GetName(), "replicas", replicasOf(rs))
		st.sets[objKey(res.Msg)] = res.Msg
	}
	for _, rs := range plan.remove {
		rm := rs.GetMetadata()
		_, err := c.ReplicaSets.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Namespace: rm.GetNamespace(), Name: rm.GetName(), Uid: rm.GetUid(), ResourceVersion: rm.GetResourceVersion()}))
		if err != nil && connect.CodeOf(err) != connect.CodeNotFound {
			errs = append(errs, fmt.Errorf("prune replicaset %s: %w", rm.GetName(), stale(err)))
		}
	}
	if plan.revision != "" {
		up := proto.Clone(d).(*skiffv1.Deployment)
		if up.Metadata.Annotations == nil {
			up.Metadata.Annotations = map[string]string{}
		}
		up.Metadata.Annotations[kinds.RevisionAnnotation] = plan.revision
		res, err := c.Deployments.Update(ctx, connect.NewRequest(up))
		if err != nil {
			return 0, errors.Join(append(errs, fmt.Errorf("set revision: %w", stale(err)))...)
		}
		d = res.Msg
		st.deploys[key] = d
	}
	if !proto.Equal(plan.status, d.GetStatus()) {
		up := proto.Clone(d).(*skiffv1.Deployment)
		up.Status = plan.status
		res, err := c.Deployments.UpdateStatus(ctx, connect.NewRequest(up))
		if err != nil {
			errs = append(errs, fmt.Errorf("update status: %w", stale(err)))
		} else {
			st.deploys[key] = res.Msg
		}
	}
	return plan.recheck, errors.Join(errs...)
}

// orphan says whether d may adopt rs, as Kubernetes' deployment controller
// adopts ReplicaSets its selector picks: rs has no controller, or its
// controller was an earlier deployment of d's name that is gone (no
// garbage collector removed its ReplicaSets).
func (st *deployState) orphan(rs *skiffv1.ReplicaSet, d *skiffv1.Deployment) bool {
	m := rs.GetMetadata()
	if m.GetDeletionTimestamp() != nil || !kinds.SelectorMatches(d.GetSpec().GetSelector(), m.GetLabels()) {
		return false
	}
	ref := controllerOf(m)
	if ref == nil {
		return true
	}
	if ref.GetKind() != kinds.Deployment.Kind || ref.GetName() != d.GetMetadata().GetName() {
		return false
	}
	for _, other := range st.deploys {
		if other.GetMetadata().GetUid() == ref.GetUid() {
			return false
		}
	}
	return true
}

// adopt makes d the controller of rs, dropping a controller reference to
// a deployment that is gone.
func (c *DeploymentController) adopt(ctx context.Context, rs *skiffv1.ReplicaSet, d *skiffv1.Deployment) (*skiffv1.ReplicaSet, error) {
	up := proto.Clone(rs).(*skiffv1.ReplicaSet)
	up.Metadata.OwnerReferences = slices.DeleteFunc(up.Metadata.OwnerReferences, func(r *skiffv1.OwnerReference) bool { return r.GetController() })
	up.Metadata.OwnerReferences = append(up.Metadata.OwnerReferences, ownerRef(kinds.Deployment, d.GetMetadata()))
	res, err := c.ReplicaSets.Update(ctx, connect.NewRequest(up))
	if err != nil {
		code := connect.CodeOf(err)
		if code == connect.CodeAborted || code == connect.CodeNotFound {
			err = errors.Join(errStale, err)
		}
		return nil, fmt.Errorf("adopt replicaset %s: %w", rs.GetMetadata().GetName(), err)
	}
	return res.Msg, nil
}
