package wasm

import (
	"container/list"
	"context"

	"github.com/tetratelabs/wazero"
)

// DefaultModuleCacheBytes bounds the compiled modules kept in memory when
// Config.ModuleCacheBytes is zero.
const DefaultModuleCacheBytes = 256 << 20

// compiledSizeFactor estimates a module's compiled size in memory from its
// binary size. wazero does not tell how much machine code and metadata a
// compiled module holds; on amd64 it is 8 to 13 times the binary (a 2.6 MB
// Go module adds 21 MB, a 1.3 MB one 17 MB), so the estimate errs high.
const compiledSizeFactor = 13

// moduleEntry is a compiled module, or one being compiled (ready not yet
// closed). Fields other than ready, mod and err are guarded by Runtime.mu.
type moduleEntry struct {
	key   string // "" : not cached, owned by its only container
	ready chan struct{}
	mod   wazero.CompiledModule
	err   error

	size int64         // estimated bytes in memory, once compiled
	refs int           // containers using it (Created or Running): pinned while > 0
	elem *list.Element // in moduleCache.idle while refs == 0
	gone bool          // evicted or dropped: closed once refs reach 0
}

// moduleCache is the compiled modules by key, bounded by size. Entries in
// use by a container are pinned; the others are kept least recently used
// first out, and closed (their memory released) once the cache holds more
// than max bytes. Its methods are called with Runtime.mu held.
type moduleCache struct {
	max     int64
	size    int64 // of compiled entries in entries
	entries map[string]*moduleEntry
	idle    *list.List // of *moduleEntry with refs == 0, most recently used first
}

func newModuleCache(max int64) *moduleCache {
	return &moduleCache{max: max, entries: map[string]*moduleEntry{}, idle: list.New()}
}

// acquire pins e.
func (mc *moduleCache) acquire(e *moduleEntry) {
	e.refs++
	if e.elem != nil {
		mc.idle.Remove(e.elem)
		e.elem = nil
	}
}

// release unpins e and returns the entries to close: e if it is no longer
// cached, and whatever eviction made room for.
func (mc *moduleCache) release(e *moduleEntry) []*moduleEntry {
	e.refs--
	if e.refs > 0 {
		return nil
	}
	if e.gone || e.key == "" {
		e.gone = true
		return []*moduleEntry{e}
	}
	e.elem = mc.idle.PushFront(e)
	return mc.evict()
}

// added accounts for a newly compiled entry and evicts what it displaces.
func (mc *moduleCache) added(e *moduleEntry) []*moduleEntry {
	mc.size += e.size
	return mc.evict()
}

// drop removes e from the cache (its compilation failed, or the runtime
// closed); it is closed once unpinned.
func (mc *moduleCache) drop(e *moduleEntry) {
	if mc.entries[e.key] != e {
		return
	}
	delete(mc.entries, e.key)
	if e.err == nil && e.mod != nil {
		mc.size -= e.size
	}
	e.gone = true
}

// evict removes idle entries, least recently used first, while the cache
// is over its bound.
func (mc *moduleCache) evict() []*moduleEntry {
	var out []*moduleEntry
	for mc.size > mc.max && mc.idle.Len() > 0 {
		e := mc.idle.Remove(mc.idle.Back()).(*moduleEntry)
		e.elem = nil
		mc.drop(e)
		out = append(out, e)
	}
	return out
}

// closeEntries closes compiled modules no one uses any more. Called
// without Runtime.mu.
func closeEntries(es []*moduleEntry) {
	for _, e := range es {
		if e.mod != nil {
			e.mod.Close(context.Background())
		}
	}
}
