package controllers

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

// This file holds the Deployment controller's decisions, as pure functions
// of a deployment, its ReplicaSets and whether their pods are still there:
// which ReplicaSet is the current template's, how far each is scaled in a
// rolling update or a recreate, which old ones are pruned, and the status.

// Deployment condition types and reasons, as Kubernetes words them.
const (
	condAvailable   = "Available"
	condProgressing = "Progressing"

	reasonMinAvailable      = "MinimumReplicasAvailable"
	reasonMinUnavailable    = "MinimumReplicasUnavailable"
	reasonNewRSCreated      = "NewReplicaSetCreated"
	reasonRSUpdated         = "ReplicaSetUpdated"
	reasonNewRSAvailable    = "NewReplicaSetAvailable"
	reasonDeadlineExceeded  = "ProgressDeadlineExceeded"
	reasonDeploymentPaused  = "DeploymentPaused"
	reasonDeploymentResumed = "DeploymentResumed"
)

// What a deployment means when a field is unset; the apiserver stores
// these defaults, so they matter only for objects written before it did.
const (
	strategyRecreate         = "Recreate"
	defaultProgressDeadline  = 600
	defaultRevisionHistory   = 10
	defaultMaxSurgeOrUnavail = "25%"
)

// templateHash is the pod-template-hash of a template: FNV-32a of its
// deterministic encoding, written in the name alphabet.
func templateHash(t *skiffv1.PodTemplateSpec) string {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(t)
	h := fnv.New32a()
	_, _ = h.Write(b)
	digits := strconv.FormatUint(uint64(h.Sum32()), 10)
	out := make([]byte, len(digits))
	for i := range digits {
		out[i] = nameAlphabet[int(digits[i])%len(nameAlphabet)]
	}
	return string(out)
}

// withoutHash is t without the pod-template-hash label.
func withoutHash(t *skiffv1.PodTemplateSpec) *skiffv1.PodTemplateSpec {
	c := proto.Clone(t).(*skiffv1.PodTemplateSpec)
	if c.GetMetadata() != nil {
		delete(c.Metadata.Labels, kinds.PodTemplateHashLabel)
		if len(c.Metadata.Labels) == 0 {
			c.Metadata.Labels = nil
		}
	}
	return c
}

// sameTemplate says whether a ReplicaSet's template is a deployment's,
// its pod-template-hash label aside.
func sameTemplate(rsT, dT *skiffv1.PodTemplateSpec) bool {
	return proto.Equal(withoutHash(rsT), withoutHash(dT))
}

// revision reads a ReplicaSet's revision annotation; 0 when it has none.
func revision(m *skiffv1.ObjectMeta) int64 {
	n, _ := strconv.ParseInt(m.GetAnnotations()[kinds.RevisionAnnotation], 10, 64)
	return n
}

// newReplicaSet is the ReplicaSet of d's template: named
// <deployment>-<hash>, its selector, template and labels given the
// pod-template-hash label, owned by d.
func newReplicaSet(d *skiffv1.Deployment, rev int64, replicas int32) *skiffv1.ReplicaSet {
	hash := templateHash(d.GetSpec().GetTemplate())
	t := proto.Clone(d.GetSpec().GetTemplate()).(*skiffv1.PodTemplateSpec)
	if t.Metadata == nil {
		t.Metadata = &skiffv1.ObjectMeta{}
	}
	if t.Metadata.Labels == nil {
		t.Metadata.Labels = map[string]string{}
	}
	t.Metadata.Labels[kinds.PodTemplateHashLabel] = hash
	sel := proto.Clone(d.GetSpec().GetSelector()).(*skiffv1.LabelSelector)
	if sel.MatchLabels == nil {
		sel.MatchLabels = map[string]string{}
	}
	sel.MatchLabels[kinds.PodTemplateHashLabel] = hash
	m := d.GetMetadata()
	ann := map[string]string{kinds.RevisionAnnotation: strconv.FormatInt(rev, 10)}
	if cc, ok := m.GetAnnotations()[kinds.ChangeCauseAnnotation]; ok {
		ann[kinds.ChangeCauseAnnotation] = cc
	}
	return &skiffv1.ReplicaSet{
		Metadata: &skiffv1.ObjectMeta{
			Name:            rsName(m.GetName(), hash),
			Namespace:       m.GetNamespace(),
			Labels:          maps.Clone(t.Metadata.Labels),
			Annotations:     ann,
			OwnerReferences: []*skiffv1.OwnerReference{ownerRef(kinds.Deployment, m)},
		},
		Spec: &skiffv1.ReplicaSetSpec{
			Replicas:        proto.Int32(replicas),
			Selector:        sel,
			Template:        t,
			MinReadySeconds: d.GetSpec().GetMinReadySeconds(),
		},
	}
}

// rsName is <deployment>-<hash>, the deployment's name cut so that the
// ReplicaSet's pods' names (6 more characters) fit 63.
func rsName(deploy, hash string) string {
	const max = 63 - 6
	if n := max - 1 - len(hash); len(deploy) > n {
		deploy = deploy[:n]
	}
	return deploy + "-" + hash
}

// replicasOf is a ReplicaSet's spec.replicas.
func replicasOf(rs *skiffv1.ReplicaSet) int32 { return kinds.Replicas(rs.GetSpec().Replicas) }

// availableOf is how many of a ReplicaSet's pods may be counted available:
// its status says so, but never more than its spec asks for, since a
// scale-down its status has not caught up with takes pods away.
func availableOf(rs *skiffv1.ReplicaSet) int32 {
	return min(rs.GetStatus().GetAvailableReplicas(), replicasOf(rs))
}

// surgeAndUnavailable are a deployment's maxSurge and maxUnavailable as
// counts; never both 0 (Kubernetes makes maxUnavailable 1 then).
func surgeAndUnavailable(d *skiffv1.Deployment) (int32, int32) {
	n := kinds.Replicas(d.GetSpec().Replicas)
	if d.GetSpec().GetStrategy().GetType() == strategyRecreate {
		return 0, n
	}
	ru := d.GetSpec().GetStrategy().GetRollingUpdate()
	surgeV, unavailV := ru.GetMaxSurge(), ru.GetMaxUnavailable()
	if surgeV == "" {
		surgeV = defaultMaxSurgeOrUnavail
	}
	if unavailV == "" {
		unavailV = defaultMaxSurgeOrUnavail
	}
	surge, _ := kinds.IntOrPercent(surgeV, n, true)
	unavail, _ := kinds.IntOrPercent(unavailV, n, false)
	unavail = min(unavail, n)
	if surge == 0 && unavail == 0 {
		unavail = 1
	}
	return surge, unavail
}

// sortOldest sorts ReplicaSets oldest first: by revision, then creation.
func sortOldest(rss []*skiffv1.ReplicaSet) {
	slices.SortFunc(rss, func(a, b *skiffv1.ReplicaSet) int {
		if c := cmp.Compare(revision(a.GetMetadata()), revision(b.GetMetadata())); c != 0 {
			return c
		}
		if c := a.GetMetadata().GetCreationTimestamp().AsTime().Compare(b.GetMetadata().GetCreationTimestamp().AsTime()); c != 0 {
			return c
		}
		return cmp.Compare(a.GetMetadata().GetName(), b.GetMetadata().GetName())
	})
}

// rollingScale decides a rolling update step, as Kubernetes'
// rolloutRolling: the new ReplicaSet grows while all pods stay within
// replicas+maxSurge, and old ones shrink while the available pods stay at
// least replicas-maxUnavailable, unhealthy old pods first. It returns the
// new replicas of each ReplicaSet (newRS first, then olds, oldest first).
func rollingScale(d *skiffv1.Deployment, newRS *skiffv1.ReplicaSet, olds []*skiffv1.ReplicaSet) (int32, []int32) {
	want := kinds.Replicas(d.GetSpec().Replicas)
	surge, unavail := surgeAndUnavailable(d)
	newN := replicasOf(newRS)
	oldN := make([]int32, len(olds))
	var total int32
	for i, rs := range olds {
		oldN[i] = replicasOf(rs)
		total += oldN[i]
	}
	total += newN
	switch {
	case newN > want:
		total -= newN - want
		newN = want
	case newN < want:
		if room := want + surge - total; room > 0 {
			up := min(room, want-newN)
			newN += up
			total += up
		}
	}
	var oldTotal int32
	for _, n := range oldN {
		oldTotal += n
	}
	if oldTotal == 0 {
		return newN, oldN
	}
	minAvailable := want - unavail
	newUnavailable := max(newN-min(newRS.GetStatus().GetAvailableReplicas(), newN), 0)
	maxScaledDown := total - minAvailable - newUnavailable
	if maxScaledDown <= 0 {
		return newN, oldN
	}
	// Unhealthy old pods first: they hold no availability.
	cleaned := int32(0)
	for i, rs := range olds {
		if cleaned >= maxScaledDown {
			break
		}
		unhealthy := oldN[i] - availableOf(rs)
		if unhealthy <= 0 {
			continue
		}
		down := min(unhealthy, maxScaledDown-cleaned)
		oldN[i] -= down
		cleaned += down
	}
	// Then available ones, as long as enough stay available.
	available := min(newRS.GetStatus().GetAvailableReplicas(), newN)
	for i, rs := range olds {
		available += min(availableOf(rs), oldN[i])
	}
	room := min(available-minAvailable, maxScaledDown-cleaned)
	for i := range olds {
		if room <= 0 {
			break
		}
		down := min(oldN[i], room)
		oldN[i] -= down
		room -= down
	}
	return newN, oldN
}

// deployPlan is what one sync of a deployment writes.
type deployPlan struct {
	// create is the new ReplicaSet to create, nil when it exists.
	create *skiffv1.ReplicaSet
	// update are the ReplicaSets to write (a new scale or revision).
	update []*skiffv1.ReplicaSet
	// remove are old ReplicaSets past the revision history limit.
	remove []*skiffv1.ReplicaSet
	// revision is the deployment's revision annotation, "" to leave it.
	revision string
	// status is the deployment's status to report.
	status *skiffv1.DeploymentStatus
	// recheck is how long until the progress deadline should be checked
	// again; 0 for no need.
	recheck time.Duration
}

// planDeployment decides what one sync of d does, given the ReplicaSets
// it owns and whether any pod of an old ReplicaSet still exists (which a
// Recreate waits out), at now.
func planDeployment(d *skiffv1.Deployment, owned []*skiffv1.ReplicaSet, oldPodsExist bool, now time.Time) deployPlan {
	var plan deployPlan
	spec := d.GetSpec()
	want := kinds.Replicas(spec.Replicas)
	var newRS *skiffv1.ReplicaSet
	var olds []*skiffv1.ReplicaSet
	var maxOldRev int64
	for _, rs := range owned {
		if newRS == nil && sameTemplate(rs.GetSpec().GetTemplate(), spec.GetTemplate()) {
			newRS = rs
			continue
		}
		olds = append(olds, rs)
	}
	for _, rs := range olds {
		maxOldRev = max(maxOldRev, revision(rs.GetMetadata()))
	}
	sortOldest(olds)
	created := false
	changed := map[*skiffv1.ReplicaSet]*skiffv1.ReplicaSet{} // original -> its update
	edit := func(rs *skiffv1.ReplicaSet) *skiffv1.ReplicaSet {
		if c, ok := changed[rs]; ok {
			return c
		}
		c := proto.Clone(rs).(*skiffv1.ReplicaSet)
		changed[rs] = c
		return c
	}
	if newRS == nil && !spec.GetPaused() {
		newRS = newReplicaSet(d, maxOldRev+1, 0)
		plan.create = newRS
		created = true
	} else if newRS != nil && revision(newRS.GetMetadata()) <= maxOldRev && !spec.GetPaused() {
		// An old template again (undo): it becomes the newest revision.
		c := edit(newRS)
		if c.Metadata.Annotations == nil {
			c.Metadata.Annotations = map[string]string{}
		}
		c.Metadata.Annotations[kinds.RevisionAnnotation] = strconv.FormatInt(maxOldRev+1, 10)
	}
	if newRS != nil && plan.create == nil && newRS.GetSpec().GetMinReadySeconds() != spec.GetMinReadySeconds() {
		edit(newRS).Spec.MinReadySeconds = spec.GetMinReadySeconds() // availability follows the deployment's
	}
	setReplicas := func(rs *skiffv1.ReplicaSet, n int32) {
		if rs == plan.create {
			rs.Spec.Replicas = proto.Int32(n)
			return
		}
		if replicasOf(rs) != n {
			edit(rs).Spec.Replicas = proto.Int32(n)
		}
	}
	switch {
	case spec.GetPaused():
		// Only a scale, of the one ReplicaSet that has replicas (the
		// newest when none has), as Kubernetes' FindActiveOrLatest.
		var active []*skiffv1.ReplicaSet
		for _, rs := range append(slices.Clip(olds), newRS) {
			if rs != nil && replicasOf(rs) > 0 {
				active = append(active, rs)
			}
		}
		switch {
		case len(active) == 1:
			setReplicas(active[0], want)
		case len(active) == 0 && newRS != nil:
			setReplicas(newRS, want)
		}
	case spec.GetStrategy().GetType() == strategyRecreate:
		if activeOld(olds) > 0 {
			for _, rs := range olds {
				setReplicas(rs, 0)
			}
		} else if !oldPodsExist {
			setReplicas(newRS, want)
		}
	default:
		newN, oldN := rollingScale(d, newRS, olds)
		setReplicas(newRS, newN)
		for i, rs := range olds {
			setReplicas(rs, oldN[i])
		}
	}
	for _, rs := range owned {
		if c, ok := changed[rs]; ok {
			plan.update = append(plan.update, c)
		}
	}
	if newRS != nil {
		cur := newRS
		if c, ok := changed[newRS]; ok {
			cur = c
		}
		if rev := cur.GetMetadata().GetAnnotations()[kinds.RevisionAnnotation]; d.GetMetadata().GetAnnotations()[kinds.RevisionAnnotation] != rev {
			plan.revision = rev
		}
	}
	plan.remove = pruneHistory(d, olds)
	plan.status, plan.recheck = deploymentStatus(d, newRS, olds, created, len(changed) > 0, now)
	return plan
}

// activeOld is how many replicas the old ReplicaSets still ask for.
func activeOld(olds []*skiffv1.ReplicaSet) int32 {
	var n int32
	for _, rs := range olds {
		n += replicasOf(rs)
	}
	return n
}

// pruneHistory picks the old ReplicaSets beyond revisionHistoryLimit,
// oldest first, among those scaled to zero with no pods left.
func pruneHistory(d *skiffv1.Deployment, olds []*skiffv1.ReplicaSet) []*skiffv1.ReplicaSet {
	limit := int32(defaultRevisionHistory)
	if l := d.GetSpec().RevisionHistoryLimit; l != nil {
		limit = *l
	}
	var idle []*skiffv1.ReplicaSet
	for _, rs := range olds { // oldest first
		if replicasOf(rs) == 0 && rs.GetStatus().GetReplicas() == 0 && rs.GetStatus().GetObservedGeneration() >= rs.GetMetadata().GetGeneration() &&
			rs.GetMetadata().GetDeletionTimestamp() == nil {
			idle = append(idle, rs)
		}
	}
	if n := len(idle) - int(limit); n > 0 {
		return idle[:n]
	}
	return nil
}

// deploymentStatus is d's status over its ReplicaSets, with its
// Available and Progressing conditions, and how long until the progress
// deadline must be checked (0: no need). created says this sync creates
// the new ReplicaSet, scaled that it scales one: progress.
func deploymentStatus(d *skiffv1.Deployment, newRS *skiffv1.ReplicaSet, olds []*skiffv1.ReplicaSet, created, scaled bool, now time.Time) (*skiffv1.DeploymentStatus, time.Duration) {
	want := kinds.Replicas(d.GetSpec().Replicas)
	st := &skiffv1.DeploymentStatus{ObservedGeneration: d.GetMetadata().GetGeneration()}
	all := olds
	if newRS != nil && !created {
		all = append(slices.Clip(olds), newRS)
		st.UpdatedReplicas = newRS.GetStatus().GetReplicas()
	}
	for _, rs := range all {
		st.Replicas += rs.GetStatus().GetReplicas()
		st.ReadyReplicas += rs.GetStatus().GetReadyReplicas()
		st.AvailableReplicas += rs.GetStatus().GetAvailableReplicas()
	}
	st.UnavailableReplicas = max(want-st.AvailableReplicas, 0)
	prev := d.GetStatus()
	_, unavail := surgeAndUnavailable(d)
	ts := timestamppb.New(now)
	avail := &skiffv1.Condition{Type: condAvailable, Status: "True", Reason: reasonMinAvailable, Message: "Deployment has minimum availability."}
	if st.AvailableReplicas < want-unavail {
		avail = &skiffv1.Condition{Type: condAvailable, Status: "False", Reason: reasonMinUnavailable, Message: "Deployment does not have minimum availability."}
	}
	name := d.GetMetadata().GetName()
	if newRS != nil {
		name = newRS.GetMetadata().GetName()
	}
	oldProg := findCondition(prev.GetConditions(), condProgressing)
	var prog *skiffv1.Condition
	var recheck time.Duration
	deadline := time.Duration(defaultProgressDeadline) * time.Second
	if p := d.GetSpec().ProgressDeadlineSeconds; p != nil {
		deadline = time.Duration(*p) * time.Second
	}
	complete := newRS != nil && !created && st.UpdatedReplicas == want && st.Replicas == want && st.AvailableReplicas >= want &&
		replicasOf(newRS) == want && activeOld(olds) == 0
	// Progress, as Kubernetes judges it: more pods updated, ready or
	// available, or fewer old ones.
	progressed := created || scaled || prev == nil || prev.GetObservedGeneration() != st.ObservedGeneration ||
		st.UpdatedReplicas > prev.GetUpdatedReplicas() || st.ReadyReplicas > prev.GetReadyReplicas() ||
		st.AvailableReplicas > prev.GetAvailableReplicas() || st.Replicas-st.UpdatedReplicas < prev.GetReplicas()-prev.GetUpdatedReplicas()
	switch {
	case d.GetSpec().GetPaused():
		prog = &skiffv1.Condition{Type: condProgressing, Status: "Unknown", Reason: reasonDeploymentPaused, Message: "Deployment is paused", LastHeartbeatTime: ts}
		if oldProg.GetReason() == reasonDeploymentPaused {
			prog.LastHeartbeatTime = oldProg.GetLastHeartbeatTime()
		}
	case complete:
		prog = &skiffv1.Condition{Type: condProgressing, Status: "True", Reason: reasonNewRSAvailable, Message: fmt.Sprintf("ReplicaSet %q has successfully progressed.", name), LastHeartbeatTime: ts}
		if oldProg.GetReason() == reasonNewRSAvailable {
			prog.LastHeartbeatTime = oldProg.GetLastHeartbeatTime()
		}
	case created:
		prog = &skiffv1.Condition{Type: condProgressing, Status: "True", Reason: reasonNewRSCreated, Message: fmt.Sprintf("Created new replica set %q", name), LastHeartbeatTime: ts}
		recheck = deadline
	case oldProg.GetReason() == reasonDeploymentPaused:
		prog = &skiffv1.Condition{Type: condProgressing, Status: "Unknown", Reason: reasonDeploymentResumed, Message: "Deployment is resumed", LastHeartbeatTime: ts}
		recheck = deadline
	case progressed || oldProg == nil || oldProg.GetLastHeartbeatTime() == nil || oldProg.GetReason() == reasonNewRSAvailable:
		prog = &skiffv1.Condition{Type: condProgressing, Status: "True", Reason: reasonRSUpdated, Message: fmt.Sprintf("ReplicaSet %q is progressing.", name), LastHeartbeatTime: ts}
		recheck = deadline
	default:
		// No progress since the last update: past the deadline, say so.
		last := oldProg.GetLastHeartbeatTime().AsTime()
		prog = proto.Clone(oldProg).(*skiffv1.Condition)
		if left := last.Add(deadline).Sub(now); left > 0 {
			recheck = left
		} else if oldProg.GetReason() != reasonDeadlineExceeded {
			prog = &skiffv1.Condition{Type: condProgressing, Status: "False", Reason: reasonDeadlineExceeded, Message: fmt.Sprintf("ReplicaSet %q has timed out progressing.", name), LastHeartbeatTime: oldProg.GetLastHeartbeatTime()}
		}
	}
	st.Conditions = []*skiffv1.Condition{
		keepTransition(findCondition(prev.GetConditions(), condAvailable), avail, ts),
		keepTransition(oldProg, prog, ts),
	}
	return st, recheck
}

// keepTransition gives c its last transition time: old's when the status
// did not change, else now.
func keepTransition(old, c *skiffv1.Condition, now *timestamppb.Timestamp) *skiffv1.Condition {
	c.LastTransitionTime = now
	if old != nil && old.GetStatus() == c.GetStatus() && old.GetLastTransitionTime() != nil {
		c.LastTransitionTime = old.GetLastTransitionTime()
	}
	if c.LastHeartbeatTime == nil {
		c.LastHeartbeatTime = c.LastTransitionTime
	}
	return c
}

func findCondition(cs []*skiffv1.Condition, typ string) *skiffv1.Condition {
	for _, c := range cs {
		if c.GetType() == typ {
			return c
		}
	}
	return nil
}
