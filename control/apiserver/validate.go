package apiserver

import (
	"fmt"
	"regexp"
	"sort"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/selector"
)

var (
	dns1123Label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	envVarName       = regexp.MustCompile(`^[-._a-zA-Z][-._a-zA-Z0-9]*$`)
)

// validateLabel checks a name that must be an RFC 1123 label, as Kubernetes
// requires of namespaces and container names.
func validateLabel(fe *fieldErrors, path, v string) {
	switch {
	case v == "":
		fe.add(path, "required value")
	case len(v) > 63:
		fe.add(path, "must be no more than 63 characters")
	case !dns1123Label.MatchString(v):
		fe.add(path, "invalid value %q: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character", v)
	}
}

// validateSubdomain checks a name that must be an RFC 1123 subdomain, as
// Kubernetes requires of pod and node names.
func validateSubdomain(fe *fieldErrors, path, v string) {
	switch {
	case v == "":
		fe.add(path, "required value")
	case len(v) > 253:
		fe.add(path, "must be no more than 253 characters")
	case !dns1123Subdomain.MatchString(v):
		fe.add(path, "invalid value %q: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character", v)
	}
}

func validateMeta(fe *fieldErrors, m *skiffv1.ObjectMeta, namespaced bool, name func(*fieldErrors, string, string)) {
	if m == nil {
		fe.add("metadata", "required value")
		return
	}
	name(fe, "metadata.name", m.GetName())
	if namespaced {
		validateLabel(fe, "metadata.namespace", m.GetNamespace())
	} else if m.GetNamespace() != "" {
		fe.add("metadata.namespace", "not allowed: the kind is not namespaced")
	}
	validateMetaLimits(fe, m)
	for _, k := range sortedKeys(m.GetLabels()) {
		for _, msg := range selector.ValidateQualifiedName(k) {
			fe.add("metadata.labels", "invalid key %q: %s", shorten(k), msg)
		}
		for _, msg := range selector.ValidateLabelValue(m.Labels[k]) {
			fe.add("metadata.labels["+shorten(k)+"]", "invalid value %q: %s", shorten(m.Labels[k]), msg)
		}
	}
	for _, k := range sortedKeys(m.GetAnnotations()) {
		for _, msg := range selector.ValidateQualifiedName(k) {
			fe.add("metadata.annotations", "invalid key %q: %s", shorten(k), msg)
		}
	}
	seen := map[string]bool{}
	for i, f := range m.GetFinalizers() {
		path := fmt.Sprintf("metadata.finalizers[%d]", i)
		for _, msg := range selector.ValidateQualifiedName(f) {
			fe.add(path, "invalid value %q: a finalizer must be a qualified name (example.com/cleanup): %s", shorten(f), msg)
		}
		if seen[f] {
			fe.add(path, "duplicate value %q", f)
		}
		seen[f] = true
	}
	if g := m.DeletionGracePeriodSeconds; g != nil && *g < 0 {
		fe.add("metadata.deletionGracePeriodSeconds", "must not be negative")
	}
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

var conditionStatuses = map[string]bool{"True": true, "False": true, "Unknown": true}

func validateConditions(fe *fieldErrors, path string, cs []*skiffv1.Condition) {
	seen := map[string]bool{}
	for i, c := range cs {
		p := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case c.GetType() == "":
			fe.add(p+".type", "required value")
		case seen[c.GetType()]:
			fe.add(p+".type", "duplicate value %q", c.GetType())
		}
		seen[c.GetType()] = true
		if !conditionStatuses[c.GetStatus()] {
			fe.add(p+".status", "unsupported value %q: supported values are \"True\", \"False\", \"Unknown\"", c.GetStatus())
		}
	}
}
