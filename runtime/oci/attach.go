package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	skiffrt "skiff.dev/skiff/runtime"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Attach sessions join a running container's standard streams, as
// containerd's CRI does for kubectl attach.
//
// Output: the goroutines that copy the container's output (its FIFOs, or
// a TTY container's terminal) to the spec's writers also hand every chunk
// to the sessions attached at that moment, through outputHub: each session
// has a queue of its own, bounded (maxAttachBacklog bytes), which a
// goroutine of the session empties into the client's writers. The copy
// never waits for a session: one whose queue is full is cut off.
//
// Input: a container created with Stdin has a FIFO, <bundle>/stdin, as its
// stdin. The container holds it read-write (so it never reads end of file
// while no node process writes, and survives a node restart), unless it
// is StdinOnce: then it holds it read-only and the node's read-write end
// is the only writer, whose close is the container's end of file. A TTY
// container's input is its terminal's master end, which the node holds.
//
// A TTY container's master lives in the node process that created it: it
// cannot be handed to a later one. When that process ends the terminal
// hangs up (the container's process gets SIGHUP); a container that
// survives it and is adopted has no terminal to attach to, and its output
// is lost.

// Bounds of attach sessions.
const (
	// maxAttachBacklog bounds the output queued for one session: a
	// client further behind than that is cut off.
	maxAttachBacklog = 1 << 20
	// maxAttachChunks bounds the chunks queued for one session.
	maxAttachChunks = 256
	// maxAttachSessions bounds the sessions attached to one container.
	maxAttachSessions = 64
	// stdinPoll is how often a write to the container's stdin that waits
	// (the container does not read) checks whether its session has ended.
	stdinPoll = 200 * time.Millisecond
	// attachChunk is the size of the reads of output and input.
	attachChunk = 32 << 10
)

// errAttachCut: a session fell behind the container's output.
var errAttachCut = fmt.Errorf("the client fell more than %d bytes behind the container's output and was cut off", maxAttachBacklog)

// attachState is what a Container keeps for attach sessions.
type attachState struct {
	hub outputHub

	mu sync.Mutex // serializes writes to the input and its close
	// stdin is the node's end of the stdin FIFO, read-write; nil without
	// Stdin, or once closed.
	stdin *os.File
	// term is a TTY container's terminal (master end); nil without TTY,
	// or after adoption.
	term *os.File
	// inputClosed: StdinOnce, and the first session with stdin has ended.
	inputClosed bool
}

// openStdin makes the stdin FIFO of a container created with Stdin and
// returns the node's end and the container's (read-write, or read-only
// with once).
func openStdin(bundle string, once bool) (node, ctr *os.File, err error) {
	path := filepath.Join(bundle, "stdin")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		return nil, nil, fmt.Errorf("make the stdin FIFO: %w", err)
	}
	// The node's end first: the container's read-only open then finds a
	// writer and does not block.
	if node, err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
		return nil, nil, fmt.Errorf("open the stdin FIFO: %w", err)
	}
	flag := os.O_RDWR
	if once {
		flag = os.O_RDONLY
	}
	if ctr, err = os.OpenFile(path, flag, 0); err != nil {
		node.Close()
		return nil, nil, fmt.Errorf("open the stdin FIFO: %w", err)
	}
	return node, ctr, nil
}

// containerInput is what Create makes for a container's input: the ends
// of its stdin FIFO (Stdin), or the console socket on which runc sends
// its terminal, then the terminal (TTY).
type containerInput struct {
	node, ctr *os.File
	console   *consoleSocket
	term      *os.File
}

// openInput prepares the input of a container of spec in bundle; the
// console socket goes under dir if the bundle's path is too long for it.
func openInput(bundle string, spec *skiffrt.ContainerSpec, dir string) (*containerInput, error) {
	in := &containerInput{}
	var err error
	switch {
	case spec.TTY:
		in.console, err = listenConsole(bundle, dir, os.TempDir())
	case spec.Stdin:
		in.node, in.ctr, err = openStdin(bundle, spec.StdinOnce)
	}
	if err != nil {
		return nil, err
	}
	return in, nil
}

// receiveTerminal takes the terminal runc sent to the console socket, if
// there is one.
func (in *containerInput) receiveTerminal() error {
	if in.console == nil {
		return nil
	}
	term, err := in.console.receive(consoleWait)
	in.console.close()
	in.console = nil
	if err != nil {
		return err
	}
	in.term = term
	return nil
}

// keep returns the ends the node keeps (the stdin FIFO's, the terminal)
// and closes the rest.
func (in *containerInput) keep() (stdin, term *os.File) {
	stdin, term = in.node, in.term
	in.node, in.term = nil, nil
	in.close()
	return stdin, term
}

// close closes what is left.
func (in *containerInput) close() {
	for _, f := range []*os.File{in.node, in.ctr, in.term} {
		if f != nil {
			f.Close()
		}
	}
	if in.console != nil {
		in.console.close()
	}
	*in = containerInput{}
}

// withTerminal gives proc a terminal, and TERM=xterm unless its
// environment names a TERM, as containerd does.
func withTerminal(proc *specs.Process, tty bool) {
	if !tty {
		return
	}
	proc.Terminal = true
	for _, kv := range proc.Env {
		if strings.HasPrefix(kv, "TERM=") {
			return
		}
	}
	proc.Env = append(proc.Env, "TERM=xterm")
}

// reopenStdin opens the node's end of an adopted container's stdin FIFO,
// if it has one.
func reopenStdin(bundle string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(bundle, "stdin"), os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return f, err
}

// pump copies one output stream of the container (rd) to the spec's
// writer w and to the attached sessions, until rd ends or is closed. A
// writer that fails is dropped, the output still read, so that the
// container never blocks on a full FIFO or terminal.
func (c *Container) pump(w io.Writer, rd *os.File, stderr bool) {
	if w == nil {
		w = io.Discard
	}
	buf := make([]byte, attachChunk)
	for {
		n, err := rd.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				c.log.Warn("write the container's output; dropping the rest", "err", werr)
				w = io.Discard
			}
			c.att.hub.publish(stderr, buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// closeInput closes the container's stdin: the FIFO's node end (the
// container reads end of file), or, for a terminal, types the end-of-file
// character once. Idempotent.
func (c *Container) closeInput() {
	a := &c.att
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.inputClosed {
		return
	}
	a.inputClosed = true
	if a.stdin != nil {
		a.stdin.Close()
		a.stdin = nil
	}
	if a.term != nil {
		a.term.SetWriteDeadline(time.Now().Add(stdinPoll))
		a.term.Write([]byte{4}) // ^D, VEOF
	}
}

// releaseInput closes the node's end of the stdin FIFO (the container has
// exited, or the runtime is closed).
func (c *Container) releaseInput() {
	a := &c.att
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stdin != nil {
		a.stdin.Close()
		a.stdin = nil
	}
}

// writeInput writes p to the container's stdin or terminal, waiting while
// the container does not read until stop is closed. It fails once the
// input is closed. Each attempt holds the input for at most stdinPoll, so
// that closing it never waits long.
func (c *Container) writeInput(stop <-chan struct{}, p []byte) error {
	for len(p) > 0 {
		n, err := c.tryWriteInput(p)
		p = p[n:]
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			select {
			case <-stop:
				return err
			default:
			}
		case err != nil:
			return err
		}
	}
	return nil
}

func (c *Container) tryWriteInput(p []byte) (int, error) {
	a := &c.att
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.stdin
	if a.term != nil {
		f = a.term
	}
	if f == nil || a.inputClosed {
		return 0, os.ErrClosed
	}
	f.SetWriteDeadline(time.Now().Add(stdinPoll))
	return f.Write(p)
}

// copyInput copies r to the container's input until r ends, a write
// fails or stop is closed (then at r's next Read to return).
func (c *Container) copyInput(stop <-chan struct{}, r io.Reader) {
	buf := make([]byte, attachChunk)
	for {
		n, err := r.Read(buf)
		select {
		case <-stop:
			return
		default:
		}
		if n > 0 {
			if c.writeInput(stop, buf[:n]) != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Attach joins the container's standard streams (see runtime.Attacher):
// output written from now on goes to a.Stdout and a.Stderr as well as to
// the spec's writers; a.Stdin goes to the container's stdin (ignored if
// it was created without Stdin); a.Resize resizes its terminal. It
// returns once its last write to a.Stdout or a.Stderr has returned: when
// ctx ends (ctx's error), the container has exited and its output is
// relayed (nil), the client fell behind (an error), or a.Stdin ended
// (nil), except for a StdinOnce container without a terminal, whose stdin
// is then closed and whose output is relayed until it exits, as
// containerd's. With StdinOnce, the first session that carried stdin
// closes the container's stdin when it ends (a terminal is typed its
// end-of-file character). A TTY container adopted from an earlier node
// process has no terminal left: ErrState.
func (c *Container) Attach(ctx context.Context, a skiffrt.AttachIO) error {
	c.mu.Lock()
	state, detached := c.status.State, c.detached
	c.mu.Unlock()
	c.att.mu.Lock()
	term := c.att.term
	c.att.mu.Unlock()
	tty := c.proc.Terminal
	switch {
	case detached:
		return fmt.Errorf("attach to container %s: %w", c.id, skiffrt.ErrClosed)
	case state == skiffrt.StateExited:
		return fmt.Errorf("attach to container %s: %w: it has exited", c.id, skiffrt.ErrState)
	case tty && term == nil:
		return fmt.Errorf("attach to container %s: %w: its terminal was lost with the node process that created it (a terminal cannot outlive it); its output since is lost too", c.id, skiffrt.ErrState)
	}
	sub, err := c.att.hub.subscribe()
	if err != nil {
		return fmt.Errorf("attach to container %s: %w", c.id, err)
	}
	stop := make(chan struct{})
	relayed := make(chan struct{})
	go func() {
		defer close(relayed)
		sub.relay(stop, a.Stdout, a.Stderr)
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	stdinEnded := make(chan struct{})
	withStdin := a.Stdin != nil && c.spec.Stdin
	if withStdin && c.spec.StdinOnce {
		defer c.closeInput() // after stop: a write waiting on the input gives up
	}
	defer close(stop)
	if withStdin {
		go func() {
			defer close(stdinEnded)
			c.copyInput(stop, a.Stdin)
		}()
	}
	if tty && a.Resize != nil {
		if size, ok := latestSize(a.Resize); ok {
			if err := setWinsize(term, size); err != nil {
				c.log.Debug("resize the terminal", "err", err)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.resizeLoop(stop, term, a.Resize)
		}()
	}

	for {
		select {
		case <-ctx.Done():
			c.att.hub.unsubscribe(sub)
			<-relayed
			return ctx.Err()
		case <-relayed:
			if sub.wasCut() {
				return fmt.Errorf("attach to container %s: %w", c.id, errAttachCut)
			}
			return nil
		case <-stdinEnded:
			if c.spec.StdinOnce && !tty {
				c.closeInput()
				stdinEnded = nil // relay until the container exits
				continue
			}
			c.att.hub.unsubscribe(sub)
			<-relayed
			return nil
		}
	}
}

// resizeLoop applies the sizes of resize to term until stop is closed.
func (c *Container) resizeLoop(stop <-chan struct{}, term *os.File, resize <-chan skiffrt.TerminalSize) {
	for {
		select {
		case <-stop:
			return
		case size, ok := <-resize:
			if !ok {
				return
			}
			if err := setWinsize(term, size); err != nil {
				c.log.Debug("resize the terminal", "err", err)
			}
		}
	}
}

// outputHub hands a container's output to the sessions attached to it.
// Publishers never wait: a session whose queue is full is cut off.
type outputHub struct {
	mu    sync.Mutex
	subs  map[*attachSub]struct{}
	ended bool // the output has ended: no session may join
}

// chunk is a piece of output of one stream.
type chunk struct {
	stderr bool
	data   []byte
}

// attachSub is one session's queue. Its channel is closed when the
// session leaves, is cut off, or the output ends.
type attachSub struct {
	ch     chan chunk
	queued int  // bytes in ch; under the hub's mu
	cut    bool // under the hub's mu
	hub    *outputHub
}

func (h *outputHub) subscribe() (*attachSub, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.ended:
		return nil, fmt.Errorf("%w: its output has ended", skiffrt.ErrState)
	case len(h.subs) >= maxAttachSessions:
		return nil, fmt.Errorf("%w: %d sessions are attached to it already", skiffrt.ErrState, len(h.subs))
	}
	if h.subs == nil {
		h.subs = map[*attachSub]struct{}{}
	}
	s := &attachSub{ch: make(chan chunk, maxAttachChunks), hub: h}
	h.subs[s] = struct{}{}
	return s, nil
}

// unsubscribe removes s; idempotent.
func (h *outputHub) unsubscribe(s *attachSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(s)
}

func (h *outputHub) removeLocked(s *attachSub) {
	if _, ok := h.subs[s]; ok {
		delete(h.subs, s)
		close(s.ch)
	}
}

// publish queues a copy of p for every session, cutting off those whose
// queue is full.
func (h *outputHub) publish(stderr bool, p []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if s.queued+len(p) > maxAttachBacklog || len(s.ch) == cap(s.ch) {
			s.cut = true
			h.removeLocked(s)
			continue
		}
		s.queued += len(p)
		s.ch <- chunk{stderr: stderr, data: append([]byte(nil), p...)}
	}
}

// end ends every session once it has relayed what is queued, and lets no
// new one join.
func (h *outputHub) end() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ended = true
	for s := range h.subs {
		h.removeLocked(s)
	}
}

func (s *attachSub) wasCut() bool {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.cut
}

// relay writes the queued chunks to stdout and stderr (nil: discarded)
// until the queue is closed; once stop is closed, or a writer has failed,
// the rest is dropped.
func (s *attachSub) relay(stop <-chan struct{}, stdout, stderr io.Writer) {
	failed := false
	for ch := range s.ch {
		s.hub.mu.Lock()
		s.queued -= len(ch.data)
		s.hub.mu.Unlock()
		w := stdout
		if ch.stderr {
			w = stderr
		}
		select {
		case <-stop:
			failed = true
		default:
		}
		if w == nil || failed {
			continue
		}
		if _, err := w.Write(ch.data); err != nil {
			failed = true
			s.hub.unsubscribe(s)
		}
	}
}
