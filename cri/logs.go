package cri

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxLogLine is the longest chunk written as one log entry; longer lines
// are split into partial entries (kubelet and containerd use 16 KiB too).
const maxLogLine = 16 * 1024

// Log tags of the CRI log format.
const (
	tagPartial = "P"
	tagFull    = "F"
)

// Defaults of Config.LogMaxSize and Config.LogMaxFiles: the kubelet's
// containerLogMaxSize and containerLogMaxFiles.
const (
	DefaultLogMaxSize  = 10 << 20
	DefaultLogMaxFiles = 5
)

// logFlushSize is how many bytes of entries a write gathers before it
// writes them to the file: it bounds the writer's buffer, whatever the
// size of the guest's write.
const logFlushSize = 64 * 1024

// logRotation bounds a container's log on disk: the live file is rotated
// when a write would take it past maxSize, and maxFiles files (the live
// one included) are kept. The zero value means the defaults.
type logRotation struct {
	maxSize  int64
	maxFiles int
}

func (r logRotation) withDefaults() logRotation {
	if r.maxSize <= 0 {
		r.maxSize = DefaultLogMaxSize
	}
	if r.maxFiles < 2 {
		r.maxFiles = DefaultLogMaxFiles
	}
	return r
}

// containerLog writes a container's stdout and stderr to one file in the CRI
// log format, one entry per line:
//
//	<RFC3339Nano timestamp> <stdout|stderr> <P|F> <content>
//
// "F" ends a line (its newline is not part of the content); "P" is a chunk
// of a line that continues in the next entry: a line longer than maxLogLine,
// or the bytes of a write that did not end with a newline. What the guest wrote is in the file when its
// write returns, and P and F entries put together give back its bytes
// exactly.
//
// Rotation: the live file is path (<attempt>.log). When a write would take
// it past maxSize, it is renamed path.<seq> with seq one more than the last
// rotated file's (1 for the first), a new live file is opened, and rotated
// files older than the newest maxFiles-1 are deleted. So the files of one
// run, oldest first, are path.<seq> by increasing seq, then path; a file
// never changes its name but to become path.<seq>, and entries never span
// two files. A reader that holds a file open keeps reading it after it is
// renamed or deleted. The writer never waits for readers; its memory is
// one buffer of about logFlushSize.
type containerLog struct {
	path string
	now  func() time.Time
	rot  logRotation

	mu     sync.Mutex
	f      *os.File
	size   int64  // of the live file
	seq    uint64 // of the newest rotated file, 0 when none
	buf    []byte // entries not yet written
	prefix []byte // scratch for the entries' prefix
	closed bool
}

// openContainerLog opens (appending, creating it and its directory if needed)
// the log file at path, and deletes rotated files past rot's bound. created
// says whether the file is new, so that a failed create can remove it.
func openContainerLog(path string, now func() time.Time, rot logRotation) (l *containerLog, created bool, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, false, fmt.Errorf("open container log: %w", err)
	}
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, false, fmt.Errorf("open container log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, false, fmt.Errorf("open container log: %w", err)
	}
	l = &containerLog{path: path, now: now, rot: rot.withDefaults(), f: f, size: fi.Size()}
	seqs, err := rotatedSeqs(path)
	if err != nil {
		f.Close()
		return nil, false, fmt.Errorf("open container log: %w", err)
	}
	if n := len(seqs); n > 0 {
		l.seq = seqs[n-1]
		for _, s := range seqs[:max(0, n-(l.rot.maxFiles-1))] {
			os.Remove(rotatedName(path, s))
		}
	}
	return l, errors.Is(statErr, fs.ErrNotExist), nil
}

// rotatedSeqs returns the sequence numbers of path's rotated files, in
// increasing order.
func rotatedSeqs(path string) ([]uint64, error) {
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	base := filepath.Base(path) + "."
	var seqs []uint64
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), base)
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(rest, 10, 64); err == nil && n > 0 {
			seqs = append(seqs, n)
		}
	}
	slices.Sort(seqs)
	return seqs, nil
}

func rotatedName(path string, seq uint64) string {
	return path + "." + strconv.FormatUint(seq, 10)
}

// stream returns the writer for one stream ("stdout" or "stderr").
func (l *containerLog) stream(name string) io.Writer { return logStream{l, name} }

// Close closes the file; later writes fail with fs.ErrClosed.
func (l *containerLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	l.buf = nil
	return l.f.Close()
}

type logStream struct {
	l    *containerLog
	name string
}

func (s logStream) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	now := s.l.now()
	l := s.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, fs.ErrClosed
	}
	l.prefix = appendPrefix(l.prefix[:0], now, s.name)
	err := eachEntry(p, func(tag string, content []byte) error {
		l.buf = appendEntry(l.buf, l.prefix, tag, content)
		if len(l.buf) >= logFlushSize {
			return l.flush()
		}
		return nil
	})
	if err == nil {
		err = l.flush()
	}
	if err != nil {
		l.buf = l.buf[:0]
		return 0, err
	}
	return len(p), nil
}

// flush writes the buffered entries, rotating first when they would take
// the live file past its bound. l.mu is held.
func (l *containerLog) flush() error {
	if len(l.buf) == 0 {
		return nil
	}
	if l.size > 0 && l.size+int64(len(l.buf)) > l.rot.maxSize {
		if err := l.rotate(); err != nil {
			return err
		}
	}
	n, err := l.f.Write(l.buf)
	l.size += int64(n)
	l.buf = l.buf[:0]
	if err != nil {
		return fmt.Errorf("write container log: %w", err)
	}
	return nil
}

// reopen flushes, then opens the log's path again (creating it), for a log
// file someone else moved away or removed (the kubelet's own rotation:
// ReopenContainerLog). The numbering of rotated files goes on.
func (l *containerLog) reopen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fs.ErrClosed
	}
	if err := l.flush(); err != nil {
		return err
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("reopen container log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("reopen container log: %w", err)
	}
	l.f.Close()
	l.f, l.size = f, fi.Size()
	return nil
}

// rotate renames the live file to the next rotated name, opens a new live
// file and deletes the rotated file that falls out of the bound. l.mu is
// held.
func (l *containerLog) rotate() error {
	next := l.seq + 1
	if err := os.Rename(l.path, rotatedName(l.path, next)); err != nil {
		return fmt.Errorf("rotate container log: %w", err)
	}
	l.seq = next
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("rotate container log: %w", err)
	}
	l.f.Close()
	l.f, l.size = f, 0
	if keep := uint64(l.rot.maxFiles - 1); next > keep {
		os.Remove(rotatedName(l.path, next-keep))
	}
	return nil
}

// formatLog appends the log entries for p to buf.
func formatLog(buf []byte, now time.Time, stream string, p []byte) []byte {
	prefix := appendPrefix(nil, now, stream)
	eachEntry(p, func(tag string, content []byte) error { //nolint:errcheck // never fails
		buf = appendEntry(buf, prefix, tag, content)
		return nil
	})
	return buf
}

// eachEntry calls fn with each entry's tag and content for p, stopping at
// fn's first error.
func eachEntry(p []byte, fn func(tag string, content []byte) error) error {
	for len(p) > 0 {
		line, rest, full := bytes.Cut(p, []byte{'\n'})
		for len(line) > maxLogLine {
			if err := fn(tagPartial, line[:maxLogLine]); err != nil {
				return err
			}
			line = line[maxLogLine:]
		}
		if full {
			if err := fn(tagFull, line); err != nil {
				return err
			}
		} else if len(line) > 0 {
			if err := fn(tagPartial, line); err != nil {
				return err
			}
		}
		p = rest
	}
	return nil
}

func appendPrefix(buf []byte, now time.Time, stream string) []byte {
	buf = now.UTC().AppendFormat(buf, time.RFC3339Nano)
	return append(append(append(buf, ' '), stream...), ' ')
}

func appendEntry(buf, prefix []byte, tag string, content []byte) []byte {
	buf = append(buf, prefix...)
	buf = append(buf, tag...)
	buf = append(buf, ' ')
	buf = append(buf, content...)
	return append(buf, '\n')
}
