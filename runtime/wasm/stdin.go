package wasm

import (
	"fmt"
	"os"
	"sync"
)

// stopPipe is a container's stdin and its stop signal: an OS pipe whose
// write end the host holds and never writes. A read of stdin waits until
// signal closes the write end, then reaches end of file.
//
// It has to be an *os.File. wazero gives a module a stdin it can put in
// non-blocking mode and poll only when that stdin is an *os.File (it then
// implements fd_fdstat_set_flags and the fd_read subscription of
// poll_oneoff with fcntl and poll(2)). Any other io.Reader fails
// fd_fdstat_set_flags with ENOSYS, so a Go guest (whose syscall package
// makes stdin non-blocking at init so that a goroutine reading it parks in
// the net poller) falls back to a blocking fd_read, and a read that waits
// freezes the whole single-threaded guest: its other goroutines and timers
// stop too.
type stopPipe struct {
	r, w *os.File
	once sync.Once // closes w
}

func newStopPipe() (*stopPipe, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("make stdin pipe: %w", err)
	}
	return &stopPipe{r: r, w: w}, nil
}

// signal makes stdin reach end of file; readers blocked on it wake. It is
// idempotent and safe for concurrent use.
func (p *stopPipe) signal() { p.once.Do(func() { p.w.Close() }) }

// close releases both ends. The instance must be done with stdin: its
// _start has returned or it was never made.
func (p *stopPipe) close() {
	p.signal()
	p.r.Close()
}
