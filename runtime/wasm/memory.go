package wasm

import (
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/tetratelabs/wazero/experimental"
)

// DefaultMemoryLimit caps a container's linear memory when its spec sets
// no limit and Config.DefaultMemoryLimit is zero: 512 MiB, well under
// wazero's 4 GiB, the most a 32-bit memory can address.
const DefaultMemoryLimit = 512 << 20

const wasmPage = 64 << 10

// memoryLimiter is a container's memory allocator. Each linear memory is
// an anonymous private mapping of the container's limit, reserved but not
// committed (MAP_NORESERVE): pages cost memory once the guest touches
// them, growth never copies (the address does not move), and the pages go
// back to the kernel at once when the mapping is released, with no Go
// heap or GC headroom in between.
//
// Reallocate refuses to grow past the limit, so memory.grow returns -1 in
// the guest, and records that it did (refused). Free does not unmap: a
// container's mappings are released by release, which its run goroutine
// calls when it ends, so no memory can be unmapped while guest code might
// still touch it (wazero closes an instance whose context is canceled from
// another goroutine).
type memoryLimiter struct {
	limit uint64

	used    atomic.Uint64 // bytes of linear memory, over the container's memories
	refused atomic.Uint64 // the size of the last growth refused; 0: none

	mu       sync.Mutex
	mappings [][]byte
	released bool
}

func newMemoryLimiter(limit uint64) *memoryLimiter {
	return &memoryLimiter{limit: limit}
}

// Allocate implements experimental.MemoryAllocator.
func (l *memoryLimiter) Allocate(_, max uint64) experimental.LinearMemory {
	size := min(l.limit, max)
	size &^= wasmPage - 1 // whole pages, never past the limit
	m := &linearMemory{l: l}
	if size == 0 {
		return m
	}
	b, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		l.refused.Store(size)
		return m // every Reallocate fails: instantiation ends in a panic that run reports
	}
	l.mu.Lock()
	if l.released { // cannot happen while the run goroutine instantiates; be safe
		l.mu.Unlock()
		unix.Munmap(b)
		return m
	}
	l.mappings = append(l.mappings, b)
	l.mu.Unlock()
	m.buf = b
	return m
}

// release unmaps every memory of the container. The guest must not run
// any more.
func (l *memoryLimiter) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range l.mappings {
		unix.Munmap(b)
	}
	l.mappings = nil
	l.released = true
	l.used.Store(0)
}

// oomMessage describes a refused growth, or is empty.
func (l *memoryLimiter) oomMessage() string {
	n := l.refused.Load()
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("memory limit of %s reached: the module asked for %s of linear memory", formatBytes(l.limit), formatBytes(n))
}

// linearMemory is one linear memory in a memoryLimiter's mapping.
type linearMemory struct {
	l    *memoryLimiter
	buf  []byte // the whole mapping; nil if none could be made
	size uint64
}

// Reallocate implements experimental.LinearMemory.
func (m *linearMemory) Reallocate(size uint64) []byte {
	if size > uint64(len(m.buf)) {
		m.l.refused.Store(size)
		return nil
	}
	if size > m.size {
		m.l.used.Add(size - m.size)
		m.size = size
	}
	return m.buf[:size]
}

// Free implements experimental.LinearMemory. The mapping is released with
// the container (memoryLimiter.release), when its guest cannot run any more.
func (m *linearMemory) Free() {}

// formatBytes writes n the way Kubernetes quantities usually are: 64Mi, 1Gi.
func formatBytes(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGi", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMi", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKi", n>>10)
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMi", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}
