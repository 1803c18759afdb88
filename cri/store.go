package cri

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// stateDB persists sandbox and container records in bbolt (<RootDir>/cri.db).
// It is safe for concurrent use; callers serialize writes of one record.
//
// Commits are not fsynced (bbolt NoSync): a write is in the page cache when
// the call returns, which is all a crash of the process needs, and saves a
// disk flush per CRI call (three per pod start). Only a crash of the whole
// machine can lose or tear them, and after one the records describe nothing
// that still exists: the containers ran in the node process and the
// namespace pins were mounts. So the file <RootDir>/cri.db.boot holds the
// kernel's boot ID while the database is open, and is removed by a clean
// Close after a sync. Found at open with another boot's ID, it means the
// machine stopped without that Close: the database is discarded and
// started afresh. Where the boot ID cannot be read, every commit is synced.
//
// Writes made at once share a commit (a group commit, as databases batch
// their log flushes): the first writer commits its own write and those
// queued meanwhile, then hands the next commit to the first writer that
// arrived during it. A lone write costs one commit, as before; a burst of
// pod starts costs far fewer than one a call.
type stateDB struct {
	db       *bolt.DB
	bootPath string // "" when commits are synced

	mu      sync.Mutex
	queue   []*stateWrite // waiting for the next commit
	writing bool          // a writer is committing
	commits atomic.Uint64 // transactions committed, for tests
}

// stateWrite is one put (value set) or delete (value nil) waiting to be
// committed. done receives its result, or errLead: its writer is to
// commit the queue.
type stateWrite struct {
	bucket, key, value []byte
	done               chan error
}

// errLead tells a queued writer that the commit is its to make.
var errLead = errors.New("lead the next commit")

var (
	bucketSandboxes  = []byte("sandboxes")
	bucketContainers = []byte("containers")
)

// bootIDPath is where the kernel gives the ID of the current boot.
var bootIDPath = "/proc/sys/kernel/random/boot_id"

func openStateDB(path string, log *slog.Logger) (*stateDB, error) {
	bootPath := path + ".boot"
	boot, err := os.ReadFile(bootIDPath)
	if err != nil || len(bytes.TrimSpace(boot)) == 0 {
		log.Warn("cannot read the boot ID: every change of the CRI state is synced to disk", "err", err)
		bootPath = ""
	} else if last, err := os.ReadFile(bootPath); err == nil && !bytes.Equal(last, boot) {
		log.Warn("the machine restarted while the CRI state was open: discarding it (its containers and namespaces are gone with that boot)", "path", path)
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("discard %s: %w", path, err)
		}
	}
	if bootPath != "" {
		if err := writeSynced(bootPath, boot); err != nil {
			return nil, fmt.Errorf("open %s: %w", path, err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoSync: bootPath != ""})
	if err != nil {
		return nil, fmt.Errorf("open %s (is another skiff agent using it?): %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketSandboxes, bucketContainers} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && bootPath != "" {
		err = db.Sync() // the buckets, and a database a later boot need not discard
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &stateDB{db: db, bootPath: bootPath}, nil
}

// writeSynced writes b to path and syncs it and its directory.
func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Close syncs and closes the database, then marks it cleanly closed.
func (s *stateDB) Close() error {
	var err error
	if s.bootPath != "" {
		err = s.db.Sync()
	}
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	if err == nil && s.bootPath != "" {
		if rerr := os.Remove(s.bootPath); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = rerr
		}
	}
	return err
}

func (s *stateDB) put(bucket []byte, id string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.write(&stateWrite{bucket: bucket, key: []byte(id), value: b})
}

func (s *stateDB) delete(bucket []byte, id string) error {
	return s.write(&stateWrite{bucket: bucket, key: []byte(id)})
}

// write commits w, in one transaction with the writes queued with it, and
// returns once it is committed. Writes of one caller are committed in the
// order made.
func (s *stateDB) write(w *stateWrite) error {
	w.done = make(chan error, 1)
	s.mu.Lock()
	s.queue = append(s.queue, w)
	if s.writing {
		s.mu.Unlock()
		if err := <-w.done; err != errLead {
			return err
		}
		s.mu.Lock()
	}
	s.writing = true
	batch := s.queue // w among them
	s.queue = nil
	s.mu.Unlock()

	errs := s.commit(batch)
	for i, o := range batch {
		if o != w {
			o.done <- errs[i]
		}
	}
	s.mu.Lock()
	if len(s.queue) > 0 {
		s.queue[0].done <- errLead
	} else {
		s.writing = false
	}
	s.mu.Unlock()
	return errs[slices.Index(batch, w)]
}

// commit applies batch in one transaction and returns each write's error.
// When that transaction fails, each write is tried again alone, so that
// one bad write fails no other.
func (s *stateDB) commit(batch []*stateWrite) []error {
	apply := func(tx *bolt.Tx, o *stateWrite) error {
		if o.value == nil {
			return tx.Bucket(o.bucket).Delete(o.key)
		}
		return tx.Bucket(o.bucket).Put(o.key, o.value)
	}
	errs := make([]error, len(batch))
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, o := range batch {
			if err := apply(tx, o); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		s.commits.Add(1)
		return errs
	}
	if len(batch) == 1 {
		errs[0] = err
		return errs
	}
	for i, o := range batch {
		errs[i] = s.db.Update(func(tx *bolt.Tx) error { return apply(tx, o) })
		if errs[i] == nil {
			s.commits.Add(1)
		}
	}
	return errs
}

func (s *stateDB) putSandbox(r *sandboxRecord) error {
	if err := s.put(bucketSandboxes, r.ID, r); err != nil {
		return fmt.Errorf("save sandbox %s: %w", r.ID, err)
	}
	return nil
}

func (s *stateDB) deleteSandbox(id string) error {
	if err := s.delete(bucketSandboxes, id); err != nil {
		return fmt.Errorf("delete sandbox %s from state: %w", id, err)
	}
	return nil
}

func (s *stateDB) putContainer(r *containerRecord) error {
	if err := s.put(bucketContainers, r.ID, r); err != nil {
		return fmt.Errorf("save container %s: %w", r.ID, err)
	}
	return nil
}

func (s *stateDB) deleteContainer(id string) error {
	if err := s.delete(bucketContainers, id); err != nil {
		return fmt.Errorf("delete container %s from state: %w", id, err)
	}
	return nil
}

// load reads every record.
func (s *stateDB) load() ([]*sandboxRecord, []*containerRecord, error) {
	var sandboxes []*sandboxRecord
	var containers []*containerRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketSandboxes).ForEach(func(k, v []byte) error {
			r := &sandboxRecord{}
			if err := json.Unmarshal(v, r); err != nil {
				return fmt.Errorf("sandbox %s: %w", k, err)
			}
			sandboxes = append(sandboxes, r)
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketContainers).ForEach(func(k, v []byte) error {
			r := &containerRecord{}
			if err := json.Unmarshal(v, r); err != nil {
				return fmt.Errorf("container %s: %w", k, err)
			}
			containers = append(containers, r)
			return nil
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("load cri state: %w", err)
	}
	return sandboxes, containers, nil
}
