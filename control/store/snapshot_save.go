package store

// Snapshot files: a consistent copy of the state database that outlives the
// cluster it came from. `skiff snapshot save` writes one from a running
// server (Store.Snapshot streams the database, SnapshotFile writes the file)
// and RestoreSnapshot seeds a new one-server store from it. They are not
// Raft's own snapshots (fsm.Snapshot), which stay inside a store's
// directory, although both hold the same database bytes.
//
// The file is a fixed header, then the body:
//
//	offset  size  field
//	0       9     magic "SKIFFSNAP"
//	9       4     format version, big-endian (snapshotFileVersion)
//	13      8     revision, big-endian: the database's applied index
//	21      8     body size in bytes, big-endian
//	29      32    SHA-256 of the body
//	61      size  body: the state database (bbolt) as a read transaction wrote it
//
// The size and the hash make a truncated or damaged file an error that says
// so, before anything is restored from it.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"go.etcd.io/bbolt"
)

const (
	snapshotFileMagic   = "SKIFFSNAP"
	snapshotFileVersion = 1
	snapshotHeaderSize  = len(snapshotFileMagic) + 4 + 8 + 8 + sha256.Size
)

// SnapshotInfo describes a snapshot: the revision of the state it holds and
// the size and SHA-256 of its body, the state database.
type SnapshotInfo struct {
	Revision uint64
	Size     int64
	SHA256   [sha256.Size]byte
}

// Snapshot writes a consistent copy of this server's state database to w,
// as one bbolt read transaction sees it, while writes carry on, and returns
// what it wrote: the revision that copy is at, its size and its SHA-256.
// On a follower the copy may lag the leader, as reads do. It stops with an
// error when ctx ends, the store closes or w fails; w may then have
// received part of the copy, which the caller must discard.
//
// A long copy holds the read transaction open, which delays bbolt's growth
// of the file (a write that needs it waits), as the Raft snapshots do; on a
// follower, installing a snapshot from the leader waits for it too.
func (s *Store) Snapshot(ctx context.Context, w io.Writer) (SnapshotInfo, error) {
	if err := s.refuse(); err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot: %w", err)
	}
	h := sha256.New()
	cw := &stoppableWriter{ctx: ctx, done: s.done, w: io.MultiWriter(w, h)}
	var info SnapshotInfo
	err := s.fsm.view(func(tx *bbolt.Tx) error {
		info.Revision = getUint64(tx.Bucket(bucketMeta).Get(keyApplied))
		var err error
		info.Size, err = tx.WriteTo(cw)
		return err
	})
	if err != nil {
		return SnapshotInfo{}, dbErr("snapshot", fmt.Sprintf("at rv %d", info.Revision), err)
	}
	copy(info.SHA256[:], h.Sum(nil))
	return info, nil
}

// stoppableWriter stops a copy when its context ends or the store closes.
type stoppableWriter struct {
	ctx  context.Context
	done <-chan struct{}
	w    io.Writer
}

func (c *stoppableWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	select {
	case <-c.done:
		return 0, ErrClosed
	default:
	}
	return c.w.Write(p)
}

// SnapshotFile writes a snapshot file atomically: the body goes to a
// temporary file next to the target, and Commit writes the header, syncs
// and renames it into place, so the target is either the whole snapshot or
// what it was before. Use it from one goroutine.
type SnapshotFile struct {
	path string
	tmp  *os.File
	hash hash.Hash
	size int64
	done bool
}

// CreateSnapshotFile starts writing the snapshot file at path; Write the
// body to it, then Commit, or Abort. A file already at path is replaced
// only by Commit.
func CreateSnapshotFile(path string) (*SnapshotFile, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create snapshot file: %w", err)
	}
	// The header is written last, when the body's hash is known.
	if _, err := tmp.Write(make([]byte, snapshotHeaderSize)); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("create snapshot file: %w", err)
	}
	return &SnapshotFile{path: path, tmp: tmp, hash: sha256.New()}, nil
}

// Write appends p to the body.
func (f *SnapshotFile) Write(p []byte) (int, error) {
	if f.done {
		return 0, errors.New("write snapshot file: already committed or aborted")
	}
	n, err := f.tmp.Write(p)
	f.hash.Write(p[:n])
	f.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("write snapshot file: %w", err)
	}
	return n, nil
}

// Commit checks that the body written is the one want describes (its size
// and SHA-256, as the server announced them), then writes the header and
// puts the file in place durably. On any error the target is left as it
// was and the temporary file removed.
func (f *SnapshotFile) Commit(want SnapshotInfo) error {
	if f.done {
		return errors.New("commit snapshot file: already committed or aborted")
	}
	got := SnapshotInfo{Revision: want.Revision, Size: f.size}
	copy(got.SHA256[:], f.hash.Sum(nil))
	if got != want {
		f.Abort()
		return fmt.Errorf("commit snapshot file: received %d bytes with sha256 %x, the server sent %d bytes with sha256 %x: the copy is damaged",
			got.Size, got.SHA256, want.Size, want.SHA256)
	}
	if want.Revision == 0 {
		f.Abort()
		return errors.New("commit snapshot file: the snapshot is at revision 0, an empty store")
	}
	err := f.finish(want)
	if err != nil {
		f.Abort()
		return fmt.Errorf("commit snapshot file %s: %w", f.path, err)
	}
	return nil
}

func (f *SnapshotFile) finish(info SnapshotInfo) error {
	if _, err := f.tmp.WriteAt(marshalSnapshotHeader(info), 0); err != nil {
		return err
	}
	if err := f.tmp.Sync(); err != nil {
		return err
	}
	if err := f.tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.tmp.Name(), f.path); err != nil {
		return err
	}
	f.done = true
	return syncDir(filepath.Dir(f.path))
}

// Abort removes the temporary file. It does nothing after Commit or a
// first Abort.
func (f *SnapshotFile) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.tmp.Close()
	os.Remove(f.tmp.Name())
}

func marshalSnapshotHeader(info SnapshotInfo) []byte {
	b := make([]byte, 0, snapshotHeaderSize)
	b = append(b, snapshotFileMagic...)
	b = binary.BigEndian.AppendUint32(b, snapshotFileVersion)
	b = binary.BigEndian.AppendUint64(b, info.Revision)
	b = binary.BigEndian.AppendUint64(b, uint64(info.Size))
	return append(b, info.SHA256[:]...)
}

// readSnapshotHeader reads and checks a snapshot file's header.
func readSnapshotHeader(r io.Reader) (SnapshotInfo, error) {
	b := make([]byte, snapshotHeaderSize)
	n, err := io.ReadFull(r, b)
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		if m := min(n, len(snapshotFileMagic)); string(b[:m]) != snapshotFileMagic[:m] {
			return SnapshotInfo{}, errors.New("not a skiff snapshot: it does not start with " + snapshotFileMagic)
		}
		return SnapshotInfo{}, fmt.Errorf("the file is truncated: %d bytes, shorter than a snapshot header (%d bytes)", n, snapshotHeaderSize)
	case err != nil:
		return SnapshotInfo{}, err
	}
	if !bytes.HasPrefix(b, []byte(snapshotFileMagic)) {
		return SnapshotInfo{}, errors.New("not a skiff snapshot: it does not start with " + snapshotFileMagic)
	}
	b = b[len(snapshotFileMagic):]
	if v := binary.BigEndian.Uint32(b); v != snapshotFileVersion {
		return SnapshotInfo{}, fmt.Errorf("snapshot format version %d is not one this skiff reads (%d)", v, snapshotFileVersion)
	}
	info := SnapshotInfo{Revision: binary.BigEndian.Uint64(b[4:]), Size: int64(binary.BigEndian.Uint64(b[12:]))}
	copy(info.SHA256[:], b[20:])
	if info.Size < 0 {
		return SnapshotInfo{}, fmt.Errorf("the file is damaged: header with body size %d", uint64(info.Size))
	}
	if info.Revision == 0 {
		return SnapshotInfo{}, errors.New("the file is damaged: header with revision 0")
	}
	return info, nil
}

// copySnapshotBody reads the snapshot file at path, copies its body to w
// and checks it against the header: the size (a truncated file, or one with
// bytes after the body) and the SHA-256 (a damaged one).
func copySnapshotBody(path string, w io.Writer) (SnapshotInfo, error) {
	fh, err := os.Open(path)
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer fh.Close()
	info, err := readSnapshotHeader(fh)
	if err != nil {
		return SnapshotInfo{}, err
	}
	h := sha256.New()
	n, err := io.CopyN(io.MultiWriter(w, h), fh, info.Size)
	switch {
	case errors.Is(err, io.EOF):
		return SnapshotInfo{}, fmt.Errorf("the file is truncated: the header announces a body of %d bytes, the file holds %d", info.Size, n)
	case err != nil:
		return SnapshotInfo{}, err
	}
	if extra, err := io.Copy(io.Discard, fh); err != nil {
		return SnapshotInfo{}, err
	} else if extra > 0 {
		return SnapshotInfo{}, fmt.Errorf("the file is damaged: %d bytes after the %d-byte body the header announces", extra, info.Size)
	}
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	if sum != info.SHA256 {
		return SnapshotInfo{}, fmt.Errorf("the file is damaged: the body's sha256 is %x, the header says %x", sum, info.SHA256)
	}
	return info, nil
}
