package kinds

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// Labels and annotations of apps/v1 objects, as Kubernetes names them.
const (
	// PodTemplateHashLabel tells a deployment's ReplicaSets, and their
	// pods, apart: the hash of the template each was made from.
	PodTemplateHashLabel = "pod-template-hash"
	// RevisionAnnotation is the revision of a deployment's ReplicaSet,
	// and of the deployment (its newest ReplicaSet's).
	RevisionAnnotation = "deployment.kubernetes.io/revision"
	// ChangeCauseAnnotation is what `rollout history` shows for a revision.
	ChangeCauseAnnotation = "kubernetes.io/change-cause"
	// RestartedAtAnnotation is the template annotation `rollout restart`
	// sets, so that the template changes and its pods are replaced.
	RestartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"
)

// Replicas is a replicas field's value: 1 when unset, as Kubernetes
// defaults it.
func Replicas(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}

// LabelSelectorString writes a label selector in the syntax a list's
// label selector takes: "app=web,tier in (a,b),!canary".
func LabelSelectorString(s *skiffv1.LabelSelector) string {
	parts := []string{}
	if m := selectorString(s.GetMatchLabels()); m != "" {
		parts = append(parts, m)
	}
	for _, e := range s.GetMatchExpressions() {
		switch e.GetOperator() {
		case "In":
			parts = append(parts, e.GetKey()+" in ("+strings.Join(e.GetValues(), ",")+")")
		case "NotIn":
			parts = append(parts, e.GetKey()+" notin ("+strings.Join(e.GetValues(), ",")+")")
		case "Exists":
			parts = append(parts, e.GetKey())
		case "DoesNotExist":
			parts = append(parts, "!"+e.GetKey())
		}
	}
	return strings.Join(parts, ",")
}

func containerNames(t *skiffv1.PodTemplateSpec) string {
	var out []string
	for _, c := range t.GetSpec().GetContainers() {
		out = append(out, c.GetName())
	}
	return orNone(strings.Join(out, ","))
}

func containerImages(t *skiffv1.PodTemplateSpec) string {
	var out []string
	for _, c := range t.GetSpec().GetContainers() {
		out = append(out, c.GetImage())
	}
	return orNone(strings.Join(out, ","))
}

// SelectorMatches reports whether labels satisfy s: every match_labels
// pair and every expression. A nil or empty selector matches everything;
// an expression with an unknown operator matches nothing.
func SelectorMatches(s *skiffv1.LabelSelector, labels map[string]string) bool {
	for k, v := range s.GetMatchLabels() {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	for _, e := range s.GetMatchExpressions() {
		v, ok := labels[e.GetKey()]
		switch e.GetOperator() {
		case "In":
			if !ok || !slices.Contains(e.GetValues(), v) {
				return false
			}
		case "NotIn":
			if ok && slices.Contains(e.GetValues(), v) {
				return false
			}
		case "Exists":
			if !ok {
				return false
			}
		case "DoesNotExist":
			if ok {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// IntOrPercent reads a value that is a count ("3") or a percentage of
// total ("25%"), as Kubernetes' IntOrString: a percentage is rounded up
// when roundUp (maxSurge) and down otherwise (maxUnavailable). An empty
// value is 0.
func IntOrPercent(v string, total int32, roundUp bool) (int32, error) {
	if v == "" {
		return 0, nil
	}
	if p, ok := strings.CutSuffix(v, "%"); ok {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || strings.TrimSpace(p) != p {
			return 0, fmt.Errorf("invalid value %q: must be a non-negative integer or a percentage such as \"25%%\"", v)
		}
		x := int64(n) * int64(total)
		if roundUp {
			return int32((x + 99) / 100), nil
		}
		return int32(x / 100), nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > math.MaxInt32 {
		return 0, fmt.Errorf("invalid value %q: must be a non-negative integer or a percentage such as \"25%%\"", v)
	}
	return int32(n), nil
}
