package apiserver

import (
	"regexp"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

var eventReason = regexp.MustCompile(`^[A-Z][A-Za-z0-9]*$`)

// maxEventMessage bounds an event's message, as Kubernetes' events.k8s.io
// bounds its note.
const maxEventMessage = 1024

func eventStrategy() *strategy {
	return &strategy{validate: func(o kinds.Object) fieldErrors { return validateEvent(o.(*skiffv1.Event)) }}
}

func validateEvent(e *skiffv1.Event) fieldErrors {
	fe := fieldErrors{}
	io := e.GetInvolvedObject()
	if io == nil {
		fe.add("involvedObject", "required value")
	} else {
		if _, err := kinds.Lookup(io.GetKind()); err != nil || io.GetKind() == "" {
			fe.add("involvedObject.kind", "unsupported value %q: name a kind skiff serves", io.GetKind())
		}
		if io.GetName() == "" {
			fe.add("involvedObject.name", "required value")
		}
		if io.GetNamespace() != "" && io.GetNamespace() != e.GetMetadata().GetNamespace() {
			fe.add("involvedObject.namespace", "does not match the event's namespace %q", e.GetMetadata().GetNamespace())
		}
	}
	switch {
	case e.GetReason() == "":
		fe.add("reason", "required value")
	case len(e.GetReason()) > 128 || !eventReason.MatchString(e.GetReason()):
		fe.add("reason", "invalid value %q: must be a CamelCase word of at most 128 characters", e.GetReason())
	}
	if len(e.GetMessage()) > maxEventMessage {
		fe.add("message", "must be no more than %d bytes", maxEventMessage)
	}
	if t := e.GetType(); t != "Normal" && t != "Warning" {
		fe.add("type", "unsupported value %q: supported values are \"Normal\", \"Warning\"", t)
	}
	if e.GetCount() < 0 {
		fe.add("count", "must not be negative")
	}
	if e.GetSource().GetComponent() == "" {
		fe.add("source.component", "required value")
	}
	return fe
}
