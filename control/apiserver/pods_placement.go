package apiserver

import (
	"fmt"
	"strconv"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/selector"
)

// validatePlacement checks the fields that say where a pod may go: its
// node selector, node affinity and pod anti-affinity, tolerations and
// topology spread constraints, with Kubernetes' rules.
func validatePlacement(fe *fieldErrors, s *skiffv1.PodSpec) {
	for _, k := range sortedKeys(s.GetNodeSelector()) {
		validateLabelPair(fe, "spec.nodeSelector", k, s.NodeSelector[k])
	}
	if na := s.GetAffinity().GetNodeAffinity(); na != nil {
		path := "spec.affinity.nodeAffinity"
		if req := na.GetRequiredDuringSchedulingIgnoredDuringExecution(); req != nil {
			rp := path + ".requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"
			if len(req.GetNodeSelectorTerms()) == 0 {
				fe.add(rp, "required value: must have at least one node selector term")
			}
			for i, t := range req.GetNodeSelectorTerms() {
				validateNodeSelectorTerm(fe, fmt.Sprintf("%s[%d]", rp, i), t)
			}
		}
		for i, t := range na.GetPreferredDuringSchedulingIgnoredDuringExecution() {
			pp := fmt.Sprintf("%s.preferredDuringSchedulingIgnoredDuringExecution[%d]", path, i)
			validateWeight(fe, pp+".weight", t.GetWeight())
			if t.GetPreference() == nil {
				fe.add(pp+".preference", "required value")
				continue
			}
			validateNodeSelectorTerm(fe, pp+".preference", t.GetPreference())
		}
	}
	if pa := s.GetAffinity().GetPodAntiAffinity(); pa != nil {
		path := "spec.affinity.podAntiAffinity"
		for i, t := range pa.GetRequiredDuringSchedulingIgnoredDuringExecution() {
			validatePodAffinityTerm(fe, fmt.Sprintf("%s.requiredDuringSchedulingIgnoredDuringExecution[%d]", path, i), t)
		}
		for i, t := range pa.GetPreferredDuringSchedulingIgnoredDuringExecution() {
			pp := fmt.Sprintf("%s.preferredDuringSchedulingIgnoredDuringExecution[%d]", path, i)
			validateWeight(fe, pp+".weight", t.GetWeight())
			if t.GetPodAffinityTerm() == nil {
				fe.add(pp+".podAffinityTerm", "required value")
				continue
			}
			validatePodAffinityTerm(fe, pp+".podAffinityTerm", t.GetPodAffinityTerm())
		}
	}
	for i, t := range s.GetTolerations() {
		validateToleration(fe, fmt.Sprintf("spec.tolerations[%d]", i), t)
	}
	type spreadKey struct{ key, when string }
	seen := map[spreadKey]bool{}
	for i, c := range s.GetTopologySpreadConstraints() {
		path := fmt.Sprintf("spec.topologySpreadConstraints[%d]", i)
		if c.GetMaxSkew() <= 0 {
			fe.add(path+".maxSkew", "invalid value %d: must be greater than zero", c.GetMaxSkew())
		}
		validateTopologyKey(fe, path+".topologyKey", c.GetTopologyKey())
		switch c.GetWhenUnsatisfiable() {
		case "DoNotSchedule", "ScheduleAnyway":
		case "":
			fe.add(path+".whenUnsatisfiable", "required value")
		default:
			fe.add(path+".whenUnsatisfiable", "unsupported value %q: supported values are \"DoNotSchedule\", \"ScheduleAnyway\"", c.GetWhenUnsatisfiable())
		}
		k := spreadKey{c.GetTopologyKey(), c.GetWhenUnsatisfiable()}
		if seen[k] {
			fe.add(path, "duplicate value: {%s, %s}: a topologyKey and whenUnsatisfiable pair may appear once", k.key, k.when)
		}
		seen[k] = true
		if c.GetLabelSelector() != nil {
			validateLabelSelectorField(fe, path+".labelSelector", c.GetLabelSelector())
		}
	}
}

// validateLabelPair checks one key and value of a label map.
func validateLabelPair(fe *fieldErrors, path, k, v string) {
	for _, msg := range selector.ValidateQualifiedName(k) {
		fe.add(path, "invalid key %q: %s", shorten(k), msg)
	}
	for _, msg := range selector.ValidateLabelValue(v) {
		fe.add(path+"["+shorten(k)+"]", "invalid value %q: %s", shorten(v), msg)
	}
}

func validateWeight(fe *fieldErrors, path string, w int32) {
	if w < 1 || w > 100 {
		fe.add(path, "invalid value %d: must be in the range 1-100", w)
	}
}

func validateTopologyKey(fe *fieldErrors, path, k string) {
	if k == "" {
		fe.add(path, "required value: can not be empty")
		return
	}
	for _, msg := range selector.ValidateQualifiedName(k) {
		fe.add(path, "invalid value %q: %s", shorten(k), msg)
	}
}

// validateNodeSelectorTerm checks a term of a node affinity, as
// Kubernetes: label keys and values, operators with the number of values
// each takes, and fields limited to metadata.name with In or NotIn and one
// node name.
func validateNodeSelectorTerm(fe *fieldErrors, path string, t *skiffv1.NodeSelectorTerm) {
	for i, r := range t.GetMatchExpressions() {
		p := fmt.Sprintf("%s.matchExpressions[%d]", path, i)
		for _, msg := range selector.ValidateQualifiedName(r.GetKey()) {
			fe.add(p+".key", "invalid value %q: %s", shorten(r.GetKey()), msg)
		}
		switch r.GetOperator() {
		case "In", "NotIn":
			if len(r.GetValues()) == 0 {
				fe.add(p+".values", "required value: must be specified when `operator` is 'In' or 'NotIn'")
			}
		case "Exists", "DoesNotExist":
			if len(r.GetValues()) > 0 {
				fe.add(p+".values", "forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
			}
		case "Gt", "Lt":
			if len(r.GetValues()) != 1 {
				fe.add(p+".values", "required value: must be specified single value when `operator` is 'Lt' or 'Gt'")
			} else if _, err := strconv.ParseInt(r.GetValues()[0], 10, 64); err != nil {
				fe.add(p+".values[0]", "invalid value %q: must be an integer when `operator` is 'Lt' or 'Gt'", shorten(r.GetValues()[0]))
			}
		default:
			fe.add(p+".operator", "unsupported value %q: supported values are \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\", \"Gt\", \"Lt\"", r.GetOperator())
		}
		if op := r.GetOperator(); op == "In" || op == "NotIn" {
			for j, v := range r.GetValues() {
				for _, msg := range selector.ValidateLabelValue(v) {
					fe.add(fmt.Sprintf("%s.values[%d]", p, j), "invalid value %q: %s", shorten(v), msg)
				}
			}
		}
	}
	for i, r := range t.GetMatchFields() {
		p := fmt.Sprintf("%s.matchFields[%d]", path, i)
		if r.GetKey() != "metadata.name" {
			fe.add(p+".key", "unsupported value %q: supported values are \"metadata.name\"", shorten(r.GetKey()))
		}
		switch r.GetOperator() {
		case "In", "NotIn":
			if len(r.GetValues()) != 1 {
				fe.add(p+".values", "required value: must be only one value when `operator` is 'In' or 'NotIn' for node field selector")
			}
		default:
			fe.add(p+".operator", "unsupported value %q: supported values are \"In\", \"NotIn\"", r.GetOperator())
		}
		for j, v := range r.GetValues() {
			validateSubdomain(fe, fmt.Sprintf("%s.values[%d]", p, j), v)
		}
	}
}

// validatePodAffinityTerm checks a term of a pod anti-affinity.
func validatePodAffinityTerm(fe *fieldErrors, path string, t *skiffv1.PodAffinityTerm) {
	if t.GetLabelSelector() != nil {
		validateLabelSelectorField(fe, path+".labelSelector", t.GetLabelSelector())
	}
	validateTopologyKey(fe, path+".topologyKey", t.GetTopologyKey())
	for i, ns := range t.GetNamespaces() {
		validateLabel(fe, fmt.Sprintf("%s.namespaces[%d]", path, i), ns)
	}
}

// validateLabelSelectorField checks a meta.LabelSelector, as Kubernetes'
// ValidateLabelSelector.
func validateLabelSelectorField(fe *fieldErrors, path string, s *skiffv1.LabelSelector) {
	for _, k := range sortedKeys(s.GetMatchLabels()) {
		validateLabelPair(fe, path+".matchLabels", k, s.MatchLabels[k])
	}
	for i, r := range s.GetMatchExpressions() {
		p := fmt.Sprintf("%s.matchExpressions[%d]", path, i)
		for _, msg := range selector.ValidateQualifiedName(r.GetKey()) {
			fe.add(p+".key", "invalid value %q: %s", shorten(r.GetKey()), msg)
		}
		switch r.GetOperator() {
		case "In", "NotIn":
			if len(r.GetValues()) == 0 {
				fe.add(p+".values", "required value: must be specified when `operator` is 'In' or 'NotIn'")
			}
		case "Exists", "DoesNotExist":
			if len(r.GetValues()) > 0 {
				fe.add(p+".values", "forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
			}
		default:
			fe.add(p+".operator", "unsupported value %q: supported values are \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\"", r.GetOperator())
		}
		for j, v := range r.GetValues() {
			for _, msg := range selector.ValidateLabelValue(v) {
				fe.add(fmt.Sprintf("%s.values[%d]", p, j), "invalid value %q: %s", shorten(v), msg)
			}
		}
	}
}

// taintEffects are the effects a taint may have; a toleration may also
// leave its effect empty, to match all three.
var taintEffects = map[string]bool{"NoSchedule": true, "PreferNoSchedule": true, "NoExecute": true}

const taintEffectList = `"NoSchedule", "PreferNoSchedule", "NoExecute"`

// validateToleration checks one toleration, as Kubernetes: an empty key
// only with Exists, no value with Exists, tolerationSeconds only for
// NoExecute.
func validateToleration(fe *fieldErrors, path string, t *skiffv1.Toleration) {
	if t.GetKey() != "" {
		for _, msg := range selector.ValidateQualifiedName(t.GetKey()) {
			fe.add(path+".key", "invalid value %q: %s", shorten(t.GetKey()), msg)
		}
	}
	switch t.GetOperator() {
	case "", "Equal":
		if t.GetKey() == "" {
			fe.add(path+".operator", "invalid value %q: operator must be Exists when `key` is empty, which means \"match all values and all keys\"", t.GetOperator())
		}
		for _, msg := range selector.ValidateLabelValue(t.GetValue()) {
			fe.add(path+".value", "invalid value %q: %s", shorten(t.GetValue()), msg)
		}
	case "Exists":
		if t.GetValue() != "" {
			fe.add(path+".operator", "invalid value %q: value must be empty when `operator` is 'Exists'", t.GetValue())
		}
	default:
		fe.add(path+".operator", "unsupported value %q: supported values are \"Equal\", \"Exists\"", t.GetOperator())
	}
	if e := t.GetEffect(); e != "" && !taintEffects[e] {
		fe.add(path+".effect", "unsupported value %q: supported values are %s", e, taintEffectList)
	}
	if t.TolerationSeconds != nil && t.GetEffect() != "NoExecute" {
		fe.add(path+".effect", "invalid value %q: effect must be 'NoExecute' when `tolerationSeconds` is set", t.GetEffect())
	}
}

// validateTaints checks a node's taints, as Kubernetes: a key that is a
// qualified name, a value that is a label value, one of the three effects,
// and each key and effect pair at most once.
func validateTaints(fe *fieldErrors, ts []*skiffv1.Taint) {
	type pair struct{ key, effect string }
	seen := map[pair]bool{}
	for i, t := range ts {
		path := fmt.Sprintf("spec.taints[%d]", i)
		if t.GetKey() == "" {
			fe.add(path+".key", "required value")
		}
		for _, msg := range selector.ValidateQualifiedName(t.GetKey()) {
			if t.GetKey() != "" {
				fe.add(path+".key", "invalid value %q: %s", shorten(t.GetKey()), msg)
			}
		}
		for _, msg := range selector.ValidateLabelValue(t.GetValue()) {
			fe.add(path+".value", "invalid value %q: %s", shorten(t.GetValue()), msg)
		}
		switch e := t.GetEffect(); {
		case e == "":
			fe.add(path+".effect", "required value")
		case !taintEffects[e]:
			fe.add(path+".effect", "unsupported value %q: supported values are %s", e, taintEffectList)
		}
		p := pair{t.GetKey(), t.GetEffect()}
		if seen[p] {
			fe.add(path, "duplicate value: {%s, %s}: taints must be unique by key and effect pair", p.key, p.effect)
		}
		seen[p] = true
	}
}
