// Package apiserver serves skiff's Connect API: it validates and defaults
// objects, keeps them in the replicated store and streams their changes.
//
// It is the only package that reads or writes control/store. The scheduler,
// the agents and the CLI reach the objects through the generated Connect
// clients, never through the store. It does not schedule or run anything.
package apiserver
