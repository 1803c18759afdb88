package cri

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"time"

	"skiff.dev/skiff/netns"
	skiffrt "skiff.dev/skiff/runtime"
)

// Exit status reported for containers that were running when the runtime
// went away: their instances died with the previous process.
const (
	exitCodeUnknown  = 255
	reasonUnknown    = "Unknown"
	messageRestarted = "runtime restarted"
)

// deps are a service's collaborators; tests pass fakes.
type deps struct {
	log        *slog.Logger
	now        func() time.Time
	rootDir    string
	runtimes   map[string]skiffrt.Runtime // by runtime handler
	images     imageStore
	namespaces namespaces
	network    netns.Network
	// attached hands out namespaces already attached to network; nil:
	// none (each sandbox's is attached in RunPodSandbox).
	attached attachedNamespaces
	logs     logRotation // zero: the defaults
}

// newService opens cri.db, loads the records and reconciles them with the
// world after a restart:
//   - containers of a runtime whose containers outlive the process (runc:
//     a runtime.Adopter) are adopted in the state they are in now;
//   - other running containers are exited (255, "Unknown", "runtime
//     restarted");
//   - other created containers stay created (their task is made at start);
//   - ready sandboxes whose namespace pin is gone are NotReady;
//   - namespace pins that belong to no sandbox are deleted, their pod
//     network torn down first (under the spare's CNI ID that a claim
//     names, for a namespace that came attached: netns.CNIPool);
//   - ready sandboxes keep their pod IPs (the record's).
func newService(d deps) (*service, error) {
	if d.now == nil {
		d.now = time.Now
	}
	db, err := openStateDB(filepath.Join(d.rootDir, "cri.db"), d.log)
	if err != nil {
		return nil, err
	}
	s := &service{
		log:        d.log,
		now:        d.now,
		rootDir:    d.rootDir,
		runtimes:   d.runtimes,
		images:     d.images,
		namespaces: d.namespaces,
		network:    d.network,
		attached:   d.attached,
		logs:       d.logs.withDefaults(),
		db:         db,
		sandboxes:  map[string]*sandbox{},
		containers: map[string]*container{},
		hostPorts:  map[string]*hostPortProxy{},
		names:      map[string]string{},
		closing:    make(chan struct{}),
	}
	if err := s.restore(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *service) restore() error {
	sandboxes, containers, err := s.db.load()
	if err != nil {
		return err
	}
	pinned := map[string]bool{}
	for _, r := range sandboxes {
		if r.State == sandboxReady && !r.HostNetwork && !s.namespaces.IsPinned(r.NetNSPath) {
			r.State = sandboxNotReady
			if err := s.db.putSandbox(r); err != nil {
				return err
			}
			s.log.Info("sandbox lost its network namespace; marked not ready", "sandbox", r.ID)
		}
		if r.State == sandboxReady && pidHolderLost(r) {
			r.State = sandboxNotReady
			if err := s.db.putSandbox(r); err != nil {
				return err
			}
			s.log.Info("sandbox lost its PID namespace holder; marked not ready", "sandbox", r.ID)
		}
		if r.NetNSPath != "" {
			pinned[r.NetNSPath] = true
		}
		s.sandboxes[r.ID] = &sandbox{rec: *r}
		s.names[r.nameKey()] = r.ID
		if r.State == sandboxReady && len(r.HostPorts) > 0 {
			if p, err := serveHostPorts(r.HostPorts, r.NetNSPath, dialInNamespace); err != nil {
				s.log.Warn("serve the host ports of a sandbox again", "sandbox", r.ID, "err", err)
			} else {
				s.hostPorts[r.ID] = p
			}
		}
	}
	for _, r := range containers {
		if _, ok := s.sandboxes[r.SandboxID]; !ok {
			s.log.Warn("dropping container of a sandbox that no longer exists", "container", r.ID, "sandbox", r.SandboxID)
			if err := s.db.deleteContainer(r.ID); err != nil {
				return err
			}
			continue
		}
		c := &container{rec: *r}
		if r.State != containerExited && s.adopt(c) {
			s.containers[r.ID] = c
			s.names[r.nameKey()] = r.ID
			continue
		}
		if r.State == containerRunning {
			r.State = containerExited
			r.ExitCode = exitCodeUnknown
			r.Reason = reasonUnknown
			r.Message = messageRestarted
			r.FinishedAt = s.now().UnixNano()
			if err := s.db.putContainer(r); err != nil {
				return err
			}
		}
		s.containers[r.ID] = &container{rec: *r}
		s.names[r.nameKey()] = r.ID
	}
	// Pins without a sandbox are left from a crash inside RunPodSandbox.
	pins, err := s.namespaces.List()
	if err != nil {
		s.log.Warn("list network namespaces", "err", err)
	}
	for _, p := range pins {
		if !pinned[p] {
			s.log.Info("deleting orphaned network namespace", "path", p)
			// Its pod network too: the pin is named by its sandbox's ID,
			// which the network knows it by unless it came attached
			// under a spare's ID, which its claim then holds.
			id := filepath.Base(p)
			if s.attached != nil {
				if c := s.attached.Claimed(id); c != "" {
					id = c
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), orphanTeardownTimeout)
			err := s.network.Teardown(ctx, id, p)
			cancel()
			if err != nil {
				s.log.Warn("tear down the network of an orphaned network namespace", "path", p, "err", err)
				continue
			}
			if err := s.namespaces.Delete(p); err != nil {
				s.log.Warn("delete orphaned network namespace", "path", p, "err", err)
				continue
			}
			if s.attached != nil {
				if err := s.attached.Release(filepath.Base(p)); err != nil {
					s.log.Warn("release the claim of an orphaned network namespace", "path", p, "err", err)
				}
			}
		}
	}
	return nil
}

// orphanTeardownTimeout bounds the teardown of an orphaned namespace's
// network at start.
const orphanTeardownTimeout = time.Minute

// adoptTimeout bounds the adoption of one container at start.
const adoptTimeout = 30 * time.Second

// adopt takes over c's container from the runtime that still runs it, when
// that runtime is an Adopter and has it, and watches it for its exit. It
// reports whether c now has its task.
func (s *service) adopt(c *container) bool {
	rec := &c.rec
	rt, ok := s.runtimes[rec.handler()].(skiffrt.Adopter)
	if !ok {
		return false
	}
	sb := s.sandboxes[rec.SandboxID].rec
	var l *containerLog
	if rec.LogPath != "" && rec.State == containerRunning {
		var err error
		if l, _, err = openContainerLog(rec.LogPath, s.now, s.logs); err != nil {
			s.log.Warn("reopen the log of an adopted container", "container", rec.ID, "err", err)
			l = nil
		}
	}
	spec := skiffrt.ContainerSpec{ID: rec.ID, ImageID: rec.ImageID, NetNSPath: sb.NetNSPath, Stdin: rec.Stdin, StdinOnce: rec.StdinOnce, TTY: rec.TTY}
	if l != nil {
		spec.Stdout, spec.Stderr = l.stream("stdout"), l.stream("stderr")
	}
	ctx, cancel := context.WithTimeout(context.Background(), adoptTimeout)
	defer cancel()
	t, err := rt.Adopt(ctx, spec)
	if err != nil {
		if l != nil {
			l.Close()
		}
		if !errors.Is(err, skiffrt.ErrNotFound) {
			s.log.Warn("adopt container", "container", rec.ID, "err", err)
		}
		return false
	}
	rec.apply(t.Status())
	if err := s.db.putContainer(rec); err != nil {
		s.log.Error("save adopted container", "container", rec.ID, "err", err)
	}
	c.task, c.log = t, l
	if rec.State == containerRunning {
		s.watch(c, t)
	} else if l != nil {
		l.Close()
		c.log = nil
	}
	s.log.Info("container adopted", "container", rec.ID, "state", rec.State)
	return true
}

// close stops the watchers, closes the runtime (ending the containers it
// runs, without recording it), the log files and the database.
func (s *service) close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	all := make([]*container, 0, len(s.containers))
	for _, c := range s.containers {
		all = append(all, c)
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.closeHostPorts()

	var errs []error
	for _, h := range sortedKeys(s.runtimes) {
		if err := s.runtimes[h].Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close runtime %s: %w", h, err))
		}
	}
	for _, c := range all {
		c.mu.Lock()
		if c.log != nil {
			c.log.Close()
			c.log = nil
		}
		c.mu.Unlock()
	}
	if err := s.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close state: %w", err))
	}
	return errors.Join(errs...)
}

// sortedKeys is a helper for deterministic iteration in lists.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
