package store

import (
	raft "github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// logStore is raft.db, the Raft log and stable store, made fail-stop: a
// write that fails records a storage failure, as a failed state.db write
// does, so that the server stops instead of going on with a log it can no
// longer keep (raft itself would only step down and try again). Reads pass
// through.
type logStore struct {
	*raftboltdb.BoltStore
	dir   string
	fails *failStop
	// hook, for tests, is called before every write; an error it returns
	// is the write's.
	hook func() error
}

var (
	_ raft.LogStore    = (*logStore)(nil)
	_ raft.StableStore = (*logStore)(nil)
)

// write runs one write, and records a storage failure when it fails.
func (l *logStore) write(index uint64, what string, do func() error) error {
	var err error
	if l.hook != nil {
		err = l.hook()
	}
	if err == nil {
		err = do()
	}
	if err != nil {
		l.fails.fail(&storageFailure{dir: l.dir, index: index, what: "raft.db write failed (" + what + ")", err: err})
	}
	return err
}

func (l *logStore) StoreLog(log *raft.Log) error {
	return l.write(log.Index, "append", func() error { return l.BoltStore.StoreLog(log) })
}

func (l *logStore) StoreLogs(logs []*raft.Log) error {
	var index uint64
	if len(logs) > 0 {
		index = logs[0].Index
	}
	return l.write(index, "append", func() error { return l.BoltStore.StoreLogs(logs) })
}

func (l *logStore) DeleteRange(min, max uint64) error {
	return l.write(min, "truncate", func() error { return l.BoltStore.DeleteRange(min, max) })
}

func (l *logStore) Set(k, v []byte) error {
	return l.write(0, "stable state", func() error { return l.BoltStore.Set(k, v) })
}

func (l *logStore) SetUint64(k []byte, v uint64) error {
	return l.write(0, "stable state", func() error { return l.BoltStore.SetUint64(k, v) })
}
