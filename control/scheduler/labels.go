package scheduler

import (
	"slices"
	"strconv"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

// hostnameLabel is the topology key of one node per domain. A node without
// the label is its own domain, named by the node's name, so that spreading
// or keeping pods apart "per host" works on nodes that were never labelled.
const hostnameLabel = "kubernetes.io/hostname"

// topologyValue is the node's domain for a topology key, and whether the
// node has one.
func topologyValue(n *nodeInfo, key string) (string, bool) {
	v, ok := n.node.GetMetadata().GetLabels()[key]
	if !ok && key == hostnameLabel {
		return n.name(), true
	}
	return v, ok
}

// labelMatcher is a meta.LabelSelector ready to match, as
// kinds.SelectorMatches: every matchLabels pair and every expression must
// hold. As in Kubernetes, a nil selector matches nothing, an empty one
// everything, and an expression with an operator it does not know (the
// apiserver refuses those) nothing.
type labelMatcher struct {
	sel *skiffv1.LabelSelector // nil: matches nothing
}

func newLabelMatcher(s *skiffv1.LabelSelector) labelMatcher {
	return labelMatcher{sel: s}
}

func (m labelMatcher) matches(labels map[string]string) bool {
	return m.sel != nil && kinds.SelectorMatches(m.sel, labels)
}

// nodeSelectorTermMatches reports whether one term of a node affinity picks
// the node, as Kubernetes' nodeaffinity helpers: every expression on the
// node's labels and every field requirement on its fields (only
// metadata.name) holds. A term with neither picks no node, and so does one
// with an operator or value the apiserver would refuse.
func nodeSelectorTermMatches(t *skiffv1.NodeSelectorTerm, n *nodeInfo) bool {
	if len(t.GetMatchExpressions()) == 0 && len(t.GetMatchFields()) == 0 {
		return false
	}
	labels := n.node.GetMetadata().GetLabels()
	for _, r := range t.GetMatchExpressions() {
		v, ok := labels[r.GetKey()]
		if !nodeRequirementHolds(r, v, ok) {
			return false
		}
	}
	for _, r := range t.GetMatchFields() {
		if r.GetKey() != "metadata.name" {
			return false
		}
		switch r.GetOperator() {
		case "In", "NotIn":
		default:
			return false
		}
		if !nodeRequirementHolds(r, n.name(), true) {
			return false
		}
	}
	return true
}

// nodeRequirementHolds judges one requirement against the value v (present
// when ok). Gt and Lt compare integers: a label that is not one fails.
func nodeRequirementHolds(r *skiffv1.NodeSelectorRequirement, v string, ok bool) bool {
	switch r.GetOperator() {
	case "In":
		return ok && slices.Contains(r.GetValues(), v)
	case "NotIn":
		return !ok || !slices.Contains(r.GetValues(), v)
	case "Exists":
		return ok
	case "DoesNotExist":
		return !ok
	case "Gt", "Lt":
		if !ok || len(r.GetValues()) != 1 {
			return false
		}
		have, err1 := strconv.ParseInt(v, 10, 64)
		want, err2 := strconv.ParseInt(r.GetValues()[0], 10, 64)
		if err1 != nil || err2 != nil {
			return false
		}
		if r.GetOperator() == "Gt" {
			return have > want
		}
		return have < want
	}
	return false
}

// requiredNodeMatch reports whether the node satisfies the pod's
// nodeSelector and required node affinity, the node inclusion rule that
// NodeAffinity filters by and topology spread counts by.
func requiredNodeMatch(p *podInfo, n *nodeInfo) bool {
	spec := p.pod.GetSpec()
	if sel := spec.GetNodeSelector(); len(sel) > 0 {
		labels := n.node.GetMetadata().GetLabels()
		for k, v := range sel {
			if got, ok := labels[k]; !ok || got != v {
				return false
			}
		}
	}
	req := spec.GetAffinity().GetNodeAffinity().GetRequiredDuringSchedulingIgnoredDuringExecution()
	if req == nil {
		return true
	}
	for _, t := range req.GetNodeSelectorTerms() {
		if nodeSelectorTermMatches(t, n) {
			return true
		}
	}
	return false
}

// hasRequiredNodeRules reports whether requiredNodeMatch can turn any node
// down.
func hasRequiredNodeRules(p *podInfo) bool {
	spec := p.pod.GetSpec()
	return len(spec.GetNodeSelector()) > 0 || spec.GetAffinity().GetNodeAffinity().GetRequiredDuringSchedulingIgnoredDuringExecution() != nil
}

// domainTable numbers the domains of one topology key over the nodes of a
// snapshot: of[idx] is the domain of the node at place idx, -1 when it
// lacks the key; values is each domain's value, by number.
type domainTable struct {
	of     []int32
	values []string
}

func newDomainTable(nodes []*nodeInfo, key string) *domainTable {
	t := &domainTable{of: make([]int32, len(nodes))}
	byValue := map[string]int32{}
	for i, n := range nodes {
		t.of[i] = -1
		v, ok := topologyValue(n, key)
		if !ok {
			continue
		}
		id, seen := byValue[v]
		if !seen {
			id = int32(len(t.values))
			byValue[v] = id
			t.values = append(t.values, v)
		}
		t.of[i] = id
	}
	return t
}

// domain is the number of the node's domain, or -1.
func (t *domainTable) domain(n *nodeInfo) int32 {
	if n.idx >= len(t.of) {
		return -1
	}
	return t.of[n.idx]
}

// inAll reports whether the node has a domain in every table.
func inAll(tables []*domainTable, n *nodeInfo) bool {
	for _, t := range tables {
		if t.domain(n) < 0 {
			return false
		}
	}
	return true
}
