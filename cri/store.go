package cri

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// stateDB persists sandbox and container records in bbolt (<RootDir>/cri.db).
// It is safe for concurrent use; callers serialize writes of one record.
type stateDB struct{ db *bolt.DB }

var (
	bucketSandboxes  = []byte("sandboxes")
	bucketContainers = []byte("containers")
)

func openStateDB(path string) (*stateDB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
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
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &stateDB{db: db}, nil
}

func (s *stateDB) Close() error { return s.db.Close() }

func (s *stateDB) put(bucket []byte, id string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put([]byte(id), b) })
}

func (s *stateDB) delete(bucket []byte, id string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Delete([]byte(id)) })
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
