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
	log            *slog.Logger
	now            func() time.Time
	rootDir        string
	runtimes       map[string]skiffrt.Runtime // by runtime handler
	defaultHandler string                     // of sandboxes that name none
	images         imageStore
	namespaces     namespaces
	network        netns.Network
	logs           logRotation // zero: the defaults
}

// newService opens cri.db, loads the records and reconciles them with the
// world after a restart:
//   - running containers are exited (255, "Unknown", "runtime restarted");
//   - created containers stay created (their task is made at start);
//   - ready sandboxes whose namespace pin is gone are NotReady;
//   - namespace pins that belong to no sandbox are deleted.
func newService(d deps) (*service, error) {
	if d.now == nil {
		d.now = time.Now
	}
	db, err := openStateDB(filepath.Join(d.rootDir, "cri.db"), d.log)
	if err != nil {
		return nil, err
	}
	s := &service{
		log:            d.log,
		now:            d.now,
		runtimes:       d.runtimes,
		defaultHandler: d.defaultHandler,
		images:         d.images,
		namespaces:     d.namespaces,
		network:        d.network,
		logs:           d.logs.withDefaults(),
		db:             db,
		sandboxes:      map[string]*sandbox{},
		containers:     map[string]*container{},
		names:          map[string]string{},
		closing:        make(chan struct{}),
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
		if r.NetNSPath != "" {
			pinned[r.NetNSPath] = true
		}
		s.sandboxes[r.ID] = &sandbox{rec: *r}
		s.names[r.nameKey()] = r.ID
	}
	for _, r := range containers {
		if _, ok := s.sandboxes[r.SandboxID]; !ok {
			s.log.Warn("dropping container of a sandbox that no longer exists", "container", r.ID, "sandbox", r.SandboxID)
			if err := s.db.deleteContainer(r.ID); err != nil {
				return err
			}
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
			if err := s.namespaces.Delete(p); err != nil {
				s.log.Warn("delete orphaned network namespace", "path", p, "err", err)
			}
		}
	}
	return nil
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
