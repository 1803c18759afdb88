package cri

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/netns"
	skiffrt "skiff.dev/skiff/runtime"
)

// service implements the RuntimeService and ImageService servers. Calls not
// implemented fall through to the embedded Unimplemented servers.
type service struct {
	runtime.UnimplementedRuntimeServiceServer
	runtime.UnimplementedImageServiceServer

	log        *slog.Logger
	now        func() time.Time
	rootDir    string                     // cri.db, sandboxes/<id>
	runtimes   map[string]skiffrt.Runtime // by runtime handler
	images     imageStore
	namespaces namespaces
	network    netns.Network
	attached   attachedNamespaces // nil: none
	logs       logRotation
	db         *stateDB
	streams    *streamServer // nil: Exec and PortForward are Unavailable

	hostPortsMu sync.Mutex
	hostPorts   map[string]*hostPortProxy // by sandbox ID

	mu         sync.RWMutex
	sandboxes  map[string]*sandbox
	containers map[string]*container
	names      map[string]string // reserved name key -> ID

	events eventHub // container events for GetContainerEvents

	closed  bool           // guarded by mu: no new watchers
	closing chan struct{}  // closed by close: watchers stop
	wg      sync.WaitGroup // watchers
}

// sandbox is a pod sandbox. mu guards rec and the flags.
type sandbox struct {
	mu       sync.Mutex
	rec      sandboxRecord
	removing bool // no new containers
}

// container is a container. mu guards rec, task, log and the flags.
type container struct {
	mu       sync.Mutex
	rec      containerRecord
	task     task          // nil until created in this process (after a restart, until started)
	log      *containerLog // nil when the container has no log path, or once closed
	starting bool          // a StartContainer is under way
	removed  bool          // RemoveContainer has begun: no start, no more saves
	// exitSeen is closed once the watcher of the current task has
	// recorded its exit and emitted CONTAINER_STOPPED_EVENT; nil when no
	// task is watched.
	exitSeen chan struct{}
}

func newID() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b[:])
}

// lookup finds the entry whose ID is id or, failing that, the only one whose
// ID starts with id. what names the kind of object for errors.
func lookup[T any](m map[string]T, id, what string) (T, string, error) {
	var zero T
	if id == "" {
		return zero, "", fmt.Errorf("%w: %s ID is empty", errInvalidArgument, what)
	}
	if v, ok := m[id]; ok {
		return v, id, nil
	}
	found := ""
	for k := range m {
		if strings.HasPrefix(k, id) {
			if found != "" {
				return zero, "", fmt.Errorf("%w: %s ID prefix %q is ambiguous", errInvalidArgument, what, id)
			}
			found = k
		}
	}
	if found == "" {
		return zero, "", fmt.Errorf("%w: %s %q", errNotFound, what, id)
	}
	return m[found], found, nil
}

func (s *service) getSandbox(id string) (*sandbox, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sb, _, err := lookup(s.sandboxes, id, "sandbox")
	return sb, err
}

func (s *service) getContainer(id string) (*container, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, _, err := lookup(s.containers, id, "container")
	return c, err
}

// reserve reserves a name key for id; it fails if another ID holds it.
func (s *service) reserve(key, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if owner, ok := s.names[key]; ok && owner != id {
		return fmt.Errorf("%w: name is in use by %s", errAlreadyExists, owner)
	}
	s.names[key] = id
	return nil
}

func (s *service) release(key, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names[key] == id {
		delete(s.names, key)
	}
}

// containersOf returns the containers of a sandbox.
func (s *service) containersOf(sandboxID string) []*container {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*container
	for _, c := range s.containers {
		if c.rec.SandboxID == sandboxID { // SandboxID never changes
			out = append(out, c)
		}
	}
	return out
}

// snapshot returns a copy of the record with the live task's status applied.
func (c *container) snapshot() containerRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := c.rec
	if c.task != nil {
		rec.apply(c.task.Status())
	}
	return rec
}

func (sb *sandbox) snapshot() sandboxRecord {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.rec
}

// watch saves a container's exit once its task is done and emits
// CONTAINER_STOPPED_EVENT. It stops when the service closes, so a shutdown
// does not record the exits it causes. Call it with c.mu held.
func (s *service) watch(c *container, t task) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return
	}
	s.wg.Add(1)
	s.mu.RUnlock()
	seen := make(chan struct{})
	c.exitSeen = seen
	go func() {
		defer s.wg.Done()
		defer close(seen)
		select {
		case <-t.Done():
		case <-s.closing:
			return
		}
		c.mu.Lock()
		if c.task != t {
			c.mu.Unlock()
			return
		}
		if !c.removed {
			c.rec.apply(t.Status())
			if err := s.db.putContainer(&c.rec); err != nil {
				s.log.Error("save container exit", "container", c.rec.ID, "err", err)
			}
		}
		if c.log != nil {
			c.log.Close()
			c.log = nil
		}
		rec := c.rec
		rec.apply(t.Status())
		c.mu.Unlock()
		s.emit(runtime.ContainerEventType_CONTAINER_STOPPED_EVENT, rec.ID, rec.SandboxID)
		s.log.Info("container exited", "container", rec.ID, "sandbox", rec.SandboxID,
			"exit_code", rec.ExitCode, "reason", rec.Reason)
	}()
}
