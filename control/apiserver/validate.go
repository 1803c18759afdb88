package apiserver

import (
	"regexp"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

var (
	dns1123Label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	envVarName       = regexp.MustCompile(`^[-._a-zA-Z][-._a-zA-Z0-9]*$`)
	labelKey         = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	labelValue       = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
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
	for k, v := range m.GetLabels() {
		if len(k) > 317 || !labelKey.MatchString(k) {
			fe.add("metadata.labels", "invalid key %q", k)
		}
		if len(v) > 63 || !labelValue.MatchString(v) {
			fe.add("metadata.labels["+k+"]", "invalid value %q", v)
		}
	}
	for k := range m.GetAnnotations() {
		if len(k) > 317 || !labelKey.MatchString(k) {
			fe.add("metadata.annotations", "invalid key %q", k)
		}
	}
}
