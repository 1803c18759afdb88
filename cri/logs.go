package cri

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
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

// containerLog writes a container's stdout and stderr to one file in the CRI
// log format, one entry per line:
//
//	<RFC3339Nano timestamp> <stdout|stderr> <P|F> <content>
//
// "F" ends a line (its newline is not part of the content); "P" is a chunk
// of a line that continues in the next entry: a line longer than maxLogLine,
// or the bytes of a write that did not end with a newline. Nothing is
// buffered, so what the guest wrote is in the file when its write returns,
// and P and F entries put together give back its bytes exactly.
type containerLog struct {
	path string
	now  func() time.Time

	mu     sync.Mutex
	f      *os.File
	closed bool
}

// openContainerLog opens (appending, creating it and its directory if needed)
// the log file at path. created says whether the file is new, so that a
// failed create can remove it.
func openContainerLog(path string, now func() time.Time) (l *containerLog, created bool, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, false, fmt.Errorf("open container log: %w", err)
	}
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, false, fmt.Errorf("open container log: %w", err)
	}
	return &containerLog{path: path, now: now, f: f}, errors.Is(statErr, fs.ErrNotExist), nil
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
	buf := formatLog(nil, s.l.now(), s.name, p)
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	if s.l.closed {
		return 0, fs.ErrClosed
	}
	if _, err := s.l.f.Write(buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// formatLog appends the log entries for p to buf.
func formatLog(buf []byte, now time.Time, stream string, p []byte) []byte {
	prefix := now.UTC().AppendFormat(nil, time.RFC3339Nano)
	prefix = append(append(append(prefix, ' '), stream...), ' ')
	for len(p) > 0 {
		line, rest, full := bytes.Cut(p, []byte{'\n'})
		for len(line) > maxLogLine {
			buf = appendEntry(buf, prefix, tagPartial, line[:maxLogLine])
			line = line[maxLogLine:]
		}
		if full {
			buf = appendEntry(buf, prefix, tagFull, line)
		} else if len(line) > 0 {
			buf = appendEntry(buf, prefix, tagPartial, line)
		}
		p = rest
	}
	return buf
}

func appendEntry(buf, prefix []byte, tag string, content []byte) []byte {
	buf = append(buf, prefix...)
	buf = append(buf, tag...)
	buf = append(buf, ' ')
	buf = append(buf, content...)
	return append(buf, '\n')
}
