// Package apiserver serves skiff's Connect API: it validates and defaults
// objects, keeps them in the replicated store and streams their changes.
//
// It also decides who may do what. Every call is authenticated (auth.go:
// a bearer token looked up hashed in the store, or the verified client
// certificate of a server or an agent, mapped by AuthConfig.Peer) and
// authorised per verb, kind and namespace before it runs (authz.go: the
// view, edit and admin roles, and Kubernetes' NodeRestriction for agents,
// checked against the stored object). Refusals are logged as audit lines.
// AuthService manages tokens (tokens.go).
//
// It is the only package that reads or writes control/store. The scheduler,
// the agents and the CLI reach the objects through the generated Connect
// clients, never through the store. It does not schedule or run anything.
package apiserver
