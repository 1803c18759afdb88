package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The files of one run of a container, as the CRI server writes them (see
// cri/logs.go): the live file <attempt>.log, and the files it was rotated
// into, <attempt>.log.<seq>, seq increasing from 1, the newest highest. A
// file's content never changes once it is rotated; rotated files past the
// node's bound are deleted, oldest first. A file is given a logical seq for
// reading: a rotated file's own, and the live file's the one it will get
// when it is rotated (the newest rotated seq plus one).

// Bounds of a reader.
const (
	// logReadSize is how much of a file is read at once, forwards or
	// backwards.
	logReadSize = 32 * 1024
	// logBufSize bounds an entry: the CRI server writes at most 16 KiB of
	// content plus its header.
	logBufSize = 64 * 1024
	// logChunkSize is the size past which output is sent.
	logChunkSize = 32 * 1024
	// logHeaderMax bounds the header of an entry (time, stream, tag).
	logHeaderMax = 128
	// exitCheckPeriod is how often a follower that has reached the end
	// asks whether the container still runs; also its wait when the
	// directory cannot be watched (no inotify instance left).
	exitCheckPeriod = time.Second
	fallbackPoll    = 250 * time.Millisecond
)

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
		if rest, ok := strings.CutPrefix(e.Name(), base); ok {
			if n, err := strconv.ParseUint(rest, 10, 64); err == nil && n > 0 {
				seqs = append(seqs, n)
			}
		}
	}
	slices.Sort(seqs)
	return seqs, nil
}

func rotatedName(path string, seq uint64) string { return path + "." + strconv.FormatUint(seq, 10) }

// openLive opens the live file and gives its logical seq.
func openLive(path string) (*os.File, uint64, error) {
	return retryMissing(func() (*os.File, uint64, error) { return openLiveOnce(path) })
}

// retryMissing retries open while the file it opens is missing, for a
// bounded time: the live file is missing between the rename that rotates
// it and the creation of the next, a moment.
func retryMissing(open func() (*os.File, uint64, error)) (*os.File, uint64, error) {
	for i := 0; ; i++ {
		f, seq, err := open()
		if !errors.Is(err, fs.ErrNotExist) || i == 200 {
			return f, seq, err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func openLiveOnce(path string) (*os.File, uint64, error) {
	for range 100 {
		f, err := os.Open(path)
		if err != nil {
			return nil, 0, err
		}
		seq, ok, err := liveSeq(path, f)
		if err != nil {
			f.Close()
			return nil, 0, err
		}
		if ok {
			return f, seq, nil
		}
		f.Close() // rotated twice while we looked: look again
	}
	return nil, 0, errors.New("the log rotates faster than it can be opened")
}

// liveSeq gives the logical seq of f, opened as path: a rotated file's own
// if it has been rotated since, else the newest rotated seq plus one. ok is
// false when that cannot be told (it rotated while we looked).
func liveSeq(path string, f *os.File) (seq uint64, ok bool, err error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, false, err
	}
	seqs, err := rotatedSeqs(path)
	if err != nil {
		return 0, false, err
	}
	for i := len(seqs) - 1; i >= 0 && i >= len(seqs)-2; i-- {
		if ri, err := os.Stat(rotatedName(path, seqs[i])); err == nil && os.SameFile(fi, ri) {
			return seqs[i], true, nil
		}
	}
	// Still live after the listing: it was live during it.
	if li, err := os.Stat(path); err == nil && os.SameFile(fi, li) {
		if len(seqs) == 0 {
			return 1, true, nil
		}
		return seqs[len(seqs)-1] + 1, true, nil
	}
	return 0, false, nil
}

// openFrom opens the oldest file of the run whose logical seq is at least
// min: files deleted meanwhile are skipped.
func openFrom(path string, min uint64) (*os.File, uint64, error) {
	return retryMissing(func() (*os.File, uint64, error) { return openFromOnce(path, min) })
}

func openFromOnce(path string, min uint64) (*os.File, uint64, error) {
	seqs, err := rotatedSeqs(path)
	if err != nil {
		return nil, 0, err
	}
	for _, s := range seqs {
		if s < min {
			continue
		}
		f, err := os.Open(rotatedName(path, s))
		if err == nil {
			return f, s, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, 0, err
		}
	}
	return openLiveOnce(path)
}

// isLive says whether f is still the live file at path.
func isLive(path string, f *os.File) bool {
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	li, err := os.Stat(path)
	return err == nil && os.SameFile(fi, li)
}

// tailStart finds where the last n lines of the run begin: a file, opened
// and positioned there, and its logical seq. A line ends with an F entry,
// or is the unfinished one at the end. It reads backwards, a block at a
// time, newest file first.
func tailStart(path string, n int64) (*os.File, uint64, error) {
	live, seq, err := openLive(path)
	if err != nil {
		return nil, 0, err
	}
	if n == 0 {
		if _, err := live.Seek(0, io.SeekEnd); err != nil {
			live.Close()
			return nil, 0, err
		}
		return live, seq, nil
	}
	type pos struct {
		f   *os.File
		seq uint64
		off int64
	}
	var (
		later    pos // the entry after the one visited
		hasLater bool
		count    int64
		found    *pos
		held     []*os.File
	)
	defer func() {
		for _, f := range held {
			if found == nil || f != found.f {
				f.Close()
			}
		}
	}()
	cur, curSeq := live, seq
	for {
		held = append(held, cur)
		fi, err := cur.Stat()
		if err != nil {
			return nil, 0, err
		}
		err = scanBack(cur, fi.Size(), func(start int64, tag byte) bool {
			if hasLater && tag == 'F' {
				if count++; count == n {
					found = &later
					return false
				}
			}
			later, hasLater = pos{cur, curSeq, start}, true
			return true
		})
		if err != nil {
			return nil, 0, err
		}
		if found != nil {
			break
		}
		// The older file, if it is still there.
		var next *os.File
		if curSeq > 1 {
			next, err = os.Open(rotatedName(path, curSeq-1))
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, 0, err
			}
		}
		if next == nil {
			// The first line of what is kept starts the output.
			found = &pos{cur, curSeq, 0}
			if hasLater {
				found = &later
			}
			break
		}
		cur, curSeq = next, curSeq-1
	}
	if _, err := found.f.Seek(found.off, io.SeekStart); err != nil {
		return nil, 0, err
	}
	return found.f, found.seq, nil
}

// scanBack visits the entries of f's first size bytes from the last to
// the first, with where each starts and its tag (0 when it has none),
// until visit returns false.
func scanBack(f *os.File, size int64, visit func(start int64, tag byte) bool) error {
	buf := make([]byte, logReadSize+logHeaderMax)
	var carry [logHeaderMax]byte
	nc := 0
	for hi := size; hi > 0; {
		lo := max(0, hi-logReadSize)
		n := int(hi - lo)
		if _, err := f.ReadAt(buf[:n], lo); err != nil {
			return fmt.Errorf("read %s: %w", f.Name(), err)
		}
		copy(buf[n:], carry[:nc])
		data := buf[:n+nc]
		for i := n; ; {
			j := bytes.LastIndexByte(data[:i], '\n')
			if j < 0 {
				break
			}
			i = j
			if start := lo + int64(j) + 1; start < size && !visit(start, entryTag(data[j+1:])) {
				return nil
			}
		}
		if lo == 0 && !visit(0, entryTag(data)) {
			return nil
		}
		nc = copy(carry[:], buf[:n])
		hi = lo
	}
	return nil
}

// entryTag returns the tag of the entry that b starts with, 0 if none.
func entryTag(b []byte) byte {
	b = b[:min(len(b), logHeaderMax)]
	for range 2 {
		i := bytes.IndexByte(b, ' ')
		if i < 0 {
			return 0
		}
		b = b[i+1:]
	}
	if len(b) < 2 || b[1] != ' ' && b[1] != '\n' {
		return 0
	}
	return b[0]
}

// logOptions are what a reader is asked for.
type logOptions struct {
	follow     bool
	timestamps bool
	tail       int64     // lines from the end; -1: all
	since      time.Time // zero: from the start
	limit      int64     // bytes of output; -1: no limit
}

// errLimit ends output at the byte limit.
var errLimit = errors.New("limit reached")

// logOutput turns entries into the container's bytes, in chunks.
type logOutput struct {
	opts     logOptions
	send     func([]byte) error
	out      []byte
	midLine  bool // the last entry was P: the next continues its line
	skipping bool // the current line is older than since
	sent     int64
}

// entry adds one entry (without its newline).
func (o *logOutput) entry(line []byte) error {
	ts, rest, ok1 := bytes.Cut(line, []byte{' '})
	_, rest, ok2 := bytes.Cut(rest, []byte{' '})
	tag, content, _ := bytes.Cut(rest, []byte{' '})
	if !ok1 || !ok2 || len(tag) != 1 || tag[0] != 'F' && tag[0] != 'P' {
		return errors.New("not in the CRI log format")
	}
	if !o.midLine {
		if !o.opts.since.IsZero() {
			t, err := time.Parse(time.RFC3339Nano, string(ts))
			if err != nil {
				return fmt.Errorf("bad time %q", ts)
			}
			o.skipping = t.Before(o.opts.since)
		}
		if !o.skipping && o.opts.timestamps {
			if err := o.add(ts); err != nil {
				return err
			}
			if err := o.add([]byte{' '}); err != nil {
				return err
			}
		}
	}
	o.midLine = tag[0] == 'P'
	if o.skipping {
		return nil
	}
	if err := o.add(content); err != nil {
		return err
	}
	if tag[0] == 'F' {
		return o.add([]byte{'\n'})
	}
	return nil
}

func (o *logOutput) add(b []byte) error {
	if o.opts.limit >= 0 && o.sent+int64(len(o.out)+len(b)) >= o.opts.limit {
		o.out = append(o.out, b[:o.opts.limit-o.sent-int64(len(o.out))]...)
		if err := o.flush(); err != nil {
			return err
		}
		return errLimit
	}
	o.out = append(o.out, b...)
	if len(o.out) >= logChunkSize {
		return o.flush()
	}
	return nil
}

func (o *logOutput) flush() error {
	if len(o.out) == 0 {
		return nil
	}
	o.sent += int64(len(o.out))
	err := o.send(o.out)
	o.out = o.out[:0]
	return err
}

// readLog sends the run's output whose live file is path, as opts say.
// running says whether the container still runs; a follower ends once it
// does not and everything is sent, or when ctx ends.
func readLog(ctx context.Context, path string, opts logOptions, running func(context.Context) bool, send func([]byte) error) error {
	out := &logOutput{opts: opts, send: send, out: make([]byte, 0, logChunkSize+logBufSize)}
	err := readEntries(ctx, path, opts, running, out.entry, out.flush)
	if errors.Is(err, errLimit) {
		return nil
	}
	if err != nil {
		return err
	}
	return out.flush()
}

// readEntries calls entry with each entry of the run, oldest first, and
// idle before a follower waits for more.
func readEntries(ctx context.Context, path string, opts logOptions, running func(context.Context) bool, entry func([]byte) error, idle func() error) error {
	var w *dirWatch
	if opts.follow {
		// Watch before the first read, so no write after it goes unseen.
		w = watchDir(filepath.Dir(path))
		defer w.close()
	}
	var (
		f      *os.File
		seq    uint64
		endSeq uint64 // without follow: the live file's seq at the start
		err    error
	)
	if opts.tail >= 0 {
		f, seq, err = tailStart(path, opts.tail)
	} else {
		f, seq, err = openFrom(path, 0)
	}
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer func() { f.Close() }()
	if !opts.follow {
		lf, s, err := openLive(path)
		if err != nil {
			return fmt.Errorf("open log: %w", err)
		}
		lf.Close()
		endSeq = s
	}

	buf := make([]byte, logBufSize)
	r, n := 0, 0 // unread entries are buf[r:n]
	rotated := false
	exited := false
	var lastCheck time.Time
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Send the whole entries buffered.
		for {
			i := bytes.IndexByte(buf[r:n], '\n')
			if i < 0 {
				break
			}
			if err := entry(buf[r : r+i]); err != nil {
				if errors.Is(err, errLimit) {
					return err
				}
				return fmt.Errorf("read log %s: %w", f.Name(), err)
			}
			r += i + 1
		}
		if r > 0 {
			n = copy(buf, buf[r:n])
			r = 0
		}
		if n == len(buf) {
			return fmt.Errorf("read log %s: an entry longer than %d bytes: not in the CRI log format", f.Name(), len(buf))
		}
		m, err := f.Read(buf[n:])
		n += m
		if m > 0 {
			continue
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("read log %s: %w", f.Name(), err)
		}
		// At the end of f.
		if rotated { // and drained after its rotation: the next file
			nf, ns, err := openFrom(path, seq+1)
			if errors.Is(err, fs.ErrNotExist) {
				return nil // the log was removed with its pod: all is sent
			}
			if err != nil {
				return fmt.Errorf("open log: %w", err)
			}
			f.Close()
			f, seq, n, rotated = nf, ns, 0, false
			continue
		}
		if !opts.follow && seq >= endSeq {
			return nil
		}
		if !isLive(path, f) {
			rotated = true // read it to its end once more, then go on
			continue
		}
		if exited {
			return nil
		}
		if time.Since(lastCheck) >= exitCheckPeriod {
			lastCheck = time.Now()
			if !running(ctx) {
				exited = true // what it wrote before is in the file: read it all
				continue
			}
		}
		if w == nil {
			return nil
		}
		if err := idle(); err != nil {
			return err
		}
		w.wait(ctx, exitCheckPeriod)
	}
}

// dirWatch wakes a follower when a file in a directory changes: inotify,
// or a short poll when no inotify instance can be had.
type dirWatch struct {
	f *os.File // nil: poll
}

func watchDir(dir string) *dirWatch {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return &dirWatch{}
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_MODIFY|unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE); err != nil {
		unix.Close(fd)
		return &dirWatch{}
	}
	return &dirWatch{f: os.NewFile(uintptr(fd), "inotify:"+dir)}
}

// wait returns when something in the directory changed, after d, or when
// ctx ends.
func (w *dirWatch) wait(ctx context.Context, d time.Duration) {
	if w.f == nil {
		t := time.NewTimer(min(d, fallbackPoll))
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		return
	}
	if err := w.f.SetReadDeadline(time.Now().Add(d)); err != nil {
		return
	}
	stop := context.AfterFunc(ctx, func() { w.f.SetReadDeadline(time.Now()) })
	defer stop()
	var events [4096]byte
	w.f.Read(events[:]) // a batch of events, or the deadline
}

func (w *dirWatch) close() {
	if w.f != nil {
		w.f.Close()
	}
}
