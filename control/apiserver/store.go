package apiserver

import (
	"context"

	"skiff.dev/skiff/control/store"
)

// Store is what the API server needs of the replicated store. A rule that
// spans objects is a guard of the Txn that writes (ARCHITECTURE.md rule 9);
// Check evaluates guards without writing, for dry runs.
type Store interface {
	Txn(ctx context.Context, t store.Txn) (store.TxnResult, error)
	Check(ctx context.Context, guards []store.Guard) error
	Get(ctx context.Context, key string) (store.KV, error)
	List(ctx context.Context, prefix string) ([]store.KV, uint64, error)
	Watch(ctx context.Context, prefix string, rev uint64, opts ...store.WatchOption) (<-chan store.Event, error)
	// Err says why the store stopped serving (fail-stop), nil while sound.
	Err() error
}
