package controllers

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

// This file holds the ReplicaSet controller's decisions, as pure functions
// of what it has seen: which pods are a ReplicaSet's, how many to create,
// which to delete first, and the status to report.

// maxBurst bounds the pods one sync creates or deletes, as Kubernetes'
// burstReplicas.
const maxBurst = 500

// controllerOf returns the owner reference of o's managing controller,
// nil when it has none.
func controllerOf(m *skiffv1.ObjectMeta) *skiffv1.OwnerReference {
	for _, r := range m.GetOwnerReferences() {
		if r.GetController() {
			return r
		}
	}
	return nil
}

// ownerRef is the controller reference of an object made by owner of kind k.
func ownerRef(k *kinds.Kind, owner *skiffv1.ObjectMeta) *skiffv1.OwnerReference {
	return &skiffv1.OwnerReference{
		ApiVersion: k.APIVersion(), Kind: k.Kind, Name: owner.GetName(), Uid: owner.GetUid(),
		Controller: proto.Bool(true), BlockOwnerDeletion: proto.Bool(true),
	}
}

// podActive says whether a pod counts toward its ReplicaSet's replicas:
// not being deleted, and not finished.
func podActive(p *skiffv1.Pod) bool {
	if p.GetMetadata().GetDeletionTimestamp() != nil {
		return false
	}
	ph := p.GetStatus().GetPhase()
	return ph != "Succeeded" && ph != "Failed"
}

// readySince is when a pod's Ready condition last became True, and
// whether it is True.
func readySince(p *skiffv1.Pod) (time.Time, bool) {
	for _, c := range p.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			if c.GetStatus() != "True" {
				return time.Time{}, false
			}
			if c.GetLastTransitionTime() == nil {
				return time.Time{}, true
			}
			return c.GetLastTransitionTime().AsTime(), true
		}
	}
	return time.Time{}, false
}

// podAvailable says whether a pod has been ready for minReady, and if it
// is ready but not yet available, how long until it is.
func podAvailable(p *skiffv1.Pod, minReady int32, now time.Time) (bool, time.Duration) {
	since, ok := readySince(p)
	if !ok {
		return false, 0
	}
	if minReady <= 0 || since.IsZero() {
		return true, 0
	}
	left := since.Add(time.Duration(minReady) * time.Second).Sub(now)
	if left <= 0 {
		return true, 0
	}
	return false, left
}

// deleteOrder ranks pods for scale-down, as Kubernetes' ActivePods does:
// the first to go is unscheduled before scheduled, Pending before Unknown
// before Running, not ready before ready, more restarts before fewer,
// and newer before older.
func deleteOrder(a, b *skiffv1.Pod) int {
	if c := cmp.Compare(boolRank(a.GetSpec().GetNodeName() != ""), boolRank(b.GetSpec().GetNodeName() != "")); c != 0 {
		return c
	}
	if c := cmp.Compare(phaseRank(a), phaseRank(b)); c != 0 {
		return c
	}
	_, ra := readySince(a)
	_, rb := readySince(b)
	if c := cmp.Compare(boolRank(ra), boolRank(rb)); c != 0 {
		return c
	}
	if c := cmp.Compare(restarts(b), restarts(a)); c != 0 {
		return c
	}
	if c := b.GetMetadata().GetCreationTimestamp().AsTime().Compare(a.GetMetadata().GetCreationTimestamp().AsTime()); c != 0 {
		return c
	}
	return cmp.Compare(a.GetMetadata().GetName(), b.GetMetadata().GetName())
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

func phaseRank(p *skiffv1.Pod) int {
	switch p.GetStatus().GetPhase() {
	case "Pending", "":
		return 0
	case "Unknown":
		return 1
	}
	return 2
}

func restarts(p *skiffv1.Pod) uint32 {
	var n uint32
	for _, cs := range p.GetStatus().GetContainerStatuses() {
		n += cs.GetRestartCount()
	}
	return n
}

// rsPlan is what one sync of a ReplicaSet does to its pods.
type rsPlan struct {
	// create is how many pods to create.
	create int
	// remove are the pods to delete, the first to go first.
	remove []*skiffv1.Pod
}

// planReplicas decides how a ReplicaSet that wants replicas reaches it
// from its owned active pods, those it has asked to create and not yet
// seen (creating), and those it has asked to delete and not yet seen go
// (deleting). The in-flight ones count as done, so that a sync while the
// watch lags neither creates nor deletes twice.
func planReplicas(replicas int32, owned []*skiffv1.Pod, creating, deleting map[string]bool) rsPlan {
	var live []*skiffv1.Pod
	seen := map[string]bool{}
	for _, p := range owned {
		seen[p.GetMetadata().GetName()] = true
		if !deleting[p.GetMetadata().GetName()] {
			live = append(live, p)
		}
	}
	have := len(live)
	for name := range creating {
		if !seen[name] {
			have++
		}
	}
	diff := int(replicas) - have
	switch {
	case diff > 0:
		return rsPlan{create: min(diff, maxBurst)}
	case diff < 0:
		slices.SortFunc(live, deleteOrder)
		n := min(-diff, maxBurst, len(live))
		return rsPlan{remove: live[:n]}
	}
	return rsPlan{}
}

// rsStatus is the status of rs over its owned active pods at now, and how
// long until a ready pod becomes available (0: none is waiting).
func rsStatus(rs *skiffv1.ReplicaSet, owned []*skiffv1.Pod, now time.Time) (*skiffv1.ReplicaSetStatus, time.Duration) {
	st := &skiffv1.ReplicaSetStatus{
		ObservedGeneration: rs.GetMetadata().GetGeneration(),
		Conditions:         rs.GetStatus().GetConditions(),
	}
	var wait time.Duration
	tl := rs.GetSpec().GetTemplate().GetMetadata().GetLabels()
	for _, p := range owned {
		st.Replicas++
		if labelsInclude(p.GetMetadata().GetLabels(), tl) {
			st.FullyLabeledReplicas++
		}
		if _, ok := readySince(p); ok {
			st.ReadyReplicas++
		}
		ok, left := podAvailable(p, rs.GetSpec().GetMinReadySeconds(), now)
		if ok {
			st.AvailableReplicas++
		} else if left > 0 && (wait == 0 || left < wait) {
			wait = left
		}
	}
	return st, wait
}

func labelsInclude(have, want map[string]string) bool {
	for k, v := range want {
		if w, ok := have[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// newPod is a pod of rs's template named name, owned by rs.
func newPod(rs *skiffv1.ReplicaSet, name string) *skiffv1.Pod {
	t := rs.GetSpec().GetTemplate()
	m := rs.GetMetadata()
	return &skiffv1.Pod{
		Metadata: &skiffv1.ObjectMeta{
			Name:            name,
			Namespace:       m.GetNamespace(),
			Labels:          maps.Clone(t.GetMetadata().GetLabels()),
			Annotations:     maps.Clone(t.GetMetadata().GetAnnotations()),
			OwnerReferences: []*skiffv1.OwnerReference{ownerRef(kinds.ReplicaSet, m)},
		},
		Spec: proto.Clone(t.GetSpec()).(*skiffv1.PodSpec),
	}
}

// nameAlphabet is the alphabet of generated name suffixes, as Kubernetes'
// (no vowels, so that no words are spelt; no 0, 1, 3 that look like
// letters).
const nameAlphabet = "bcdfghjklmnpqrstvwxz2456789"

// podName is the name of slot slot of ReplicaSet rs: <rs>-<5 characters>,
// the characters as random-looking as Kubernetes' but drawn from a hash of
// the ReplicaSet's uid and the slot, and the ReplicaSet's name cut so that
// the whole is at most 63 characters. Two copies of the controller that
// fill the same free slots ask for the same names, so one of them meets
// AlreadyExists instead of making a pod too many.
func podName(rs *skiffv1.ReplicaSet, slot int) string {
	const max = 63 - 6
	name := rs.GetMetadata().GetName()
	if len(name) > max {
		name = name[:max]
	}
	h := fnv.New64a()
	_, _ = fmt.Fprintf(h, "%s/%d", rs.GetMetadata().GetUid(), slot)
	v := h.Sum64()
	suffix := make([]byte, 5)
	for i := range suffix {
		suffix[i] = nameAlphabet[v%uint64(len(nameAlphabet))]
		v /= uint64(len(nameAlphabet))
	}
	return name + "-" + string(suffix)
}

// freeNames picks n pod names of rs by podName, from the lowest slots
// whose names taken does not report.
func freeNames(rs *skiffv1.ReplicaSet, n int, taken func(name string) bool) []string {
	var out []string
	for slot := 0; len(out) < n; slot++ {
		if name := podName(rs, slot); !taken(name) {
			out = append(out, name)
		}
	}
	return out
}
