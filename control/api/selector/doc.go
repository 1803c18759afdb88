// Package selector owns skiff's selector languages and the name rules they
// share with the API server.
//
// It parses and matches label selectors (app=web,tier in (a,b),!canary) and
// field selectors (spec.nodeName=node-1), both in Kubernetes' syntax, and
// validates qualified names (label keys, annotation keys, finalizers) and
// label values with Kubernetes' rules and messages.
//
// It does not know any API object: a caller hands Labels.Matches an object's
// labels and Fields.Matches a function that reads a field, and it decides
// which fields a resource supports by passing them to ParseFields. Parsed
// selectors are immutable values, safe to share between goroutines.
//
// Every error from ParseLabels or ParseFields is a bad argument from the
// caller; it quotes the selector and says what is wrong and where.
package selector
