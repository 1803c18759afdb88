package apiserver

import (
	"sync"

	"skiff.dev/skiff/control/api/kinds"
	"skiff.dev/skiff/control/store"
)

// decodedEvents is the number of stored values decodedCache keeps decoded:
// enough for every watch of a burst of writes to find the value it needs
// (a watch that falls further behind decodes for itself), a few MB of pods.
const decodedEvents = 4096

// decodedCache decodes each stored value once for all the watches that
// see it: the store hands every watch of a prefix the same events, and
// without it a hundred watchers of pods decoded each pod a hundred times.
// A value is named by its key and ModRevision (a delete's KV carries the
// delete's revision), so an entry never goes stale; the oldest is dropped
// once decodedEvents are held.
//
// The objects it returns are shared between watches and must not be
// changed: a watch only filters them and sends them.
type decodedCache struct {
	mu      sync.Mutex
	entries map[decodedKey]*decodedEntry
	order   [decodedEvents]decodedKey // a ring of the keys in entries, oldest at next
	next    int
}

type decodedKey struct {
	kind *kinds.Kind
	key  string
	rev  uint64
}

type decodedEntry struct {
	once sync.Once
	obj  kinds.Object
	err  error
}

// decode returns the object kv holds, with its resourceVersion, decoding
// it only if no watch has yet. It is safe for concurrent use.
func (c *decodedCache) decode(k *kinds.Kind, kv store.KV) (kinds.Object, error) {
	dk := decodedKey{kind: k, key: kv.Key, rev: kv.ModRevision}
	c.mu.Lock()
	e, ok := c.entries[dk]
	if !ok {
		if c.entries == nil {
			c.entries = make(map[decodedKey]*decodedEntry, decodedEvents)
		}
		if old := c.order[c.next]; old.kind != nil {
			delete(c.entries, old)
		}
		e = &decodedEntry{}
		c.entries[dk] = e
		c.order[c.next] = dk
		c.next = (c.next + 1) % decodedEvents
	}
	c.mu.Unlock()
	// Decode outside the lock; the watches that want the same value at
	// the same moment wait for the first.
	e.once.Do(func() { e.obj, e.err = decode(k, kv) })
	return e.obj, e.err
}
