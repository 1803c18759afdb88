package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	skiffrt "skiff.dev/skiff/runtime"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// reapWait bounds the wait for a killed process's end on an error path.
const reapWait = 5 * time.Second

// execTTY runs proc, which has a terminal, in the container, with files
// in dir, and returns its exit code.
//
// runc 1.1 hands a terminal's master end to a console socket only when it
// detaches (`runc exec --detach --tty --console-socket`): it exits once
// the process runs, and the process, orphaned, becomes a child of this
// process (a child subreaper), which collects its exit status through a
// pidfd, as containerd's shim does. The first size already waiting on
// p.Resize is the terminal's size from the start; later ones resize it.
// The master is closed once the process has exited and the terminal has
// reached its end (every holder of its slave end gone), or copyWait after
// the exit. The goroutine copying p.Stdin ends at Stdin's first Read after
// that; the end of Stdin is typed as the end-of-file character (^D).
func (c *Container) execTTY(ctx context.Context, p skiffrt.Process, proc specs.Process, dir string) (int32, error) {
	if size, ok := latestSize(p.Resize); ok {
		proc.ConsoleSize = &specs.Box{Height: uint(size.Height), Width: uint(size.Width)}
	}
	procPath := filepath.Join(dir, "process.json")
	if err := writeProcess(procPath, proc); err != nil {
		return 0, err
	}
	sock, err := listenConsole(dir, c.r.root, os.TempDir())
	if err != nil {
		return 0, err
	}
	defer sock.close()
	pfd, pid, err := c.startTTY(ctx, sock.path, procPath, dir)
	if err != nil {
		return 0, err
	}
	defer c.r.reaper.unclaim(pid)
	defer pfd.close()
	term, err := sock.receive(consoleWait)
	if err != nil {
		killAndReap(pfd)
		return 0, err
	}
	return c.attach(ctx, p, pfd, term)
}

// startTTY runs `runc exec --detach` and returns the started process,
// claimed from the reaper (unclaim it once reaped).
func (c *Container) startTTY(ctx context.Context, sockPath, procPath, dir string) (pidfd, int, error) {
	pidPath, logPath := filepath.Join(dir, "pid"), filepath.Join(dir, "runc.log")
	// From runc's exit until the claim, the process is an unclaimed child.
	release := c.r.reaper.hold()
	defer release()
	args := []string{"--log", logPath, "--log-format", "json",
		"exec", "--detach", "--tty", "--console-socket", sockPath, "--process", procPath, "--pid-file", pidPath, c.id}
	cmd, cancel := c.r.command(ctx, args...)
	defer cancel()
	var out boundedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		// Cut short, runc may have started the process.
		if pfd, err := openPidFile(pidPath); err == nil {
			killAndReap(pfd)
			pfd.close()
		}
		if ctx.Err() != nil {
			return pidfd{}, 0, ctx.Err()
		}
		msg := logMessage(logPath)
		if msg == "" {
			msg = runcMessage(out.Bytes())
		}
		return pidfd{}, 0, &runcError{args: args[4:], msg: msg, err: err}
	}
	pid, err := readPidFile(pidPath)
	if err != nil {
		return pidfd{}, 0, fmt.Errorf("runc exec: %w", err)
	}
	pfd, err := openPidfd(pid)
	if err != nil {
		return pidfd{}, 0, fmt.Errorf("runc exec: %w", err)
	}
	c.r.reaper.claim(pid)
	return pfd, pid, nil
}

// attach relays the terminal until the process has exited and its output
// is drained; ending ctx kills the process.
func (c *Container) attach(ctx context.Context, p skiffrt.Process, pfd pidfd, term *os.File) (int32, error) {
	defer term.Close()
	outDone := make(chan struct{})
	go func() {
		defer close(outDone)
		copyOut(p.Stdout, term)
	}()
	if p.Stdin != nil {
		go copyIn(term, p.Stdin)
	}
	stopResize, resizeDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(resizeDone)
		for ch := p.Resize; ; {
			select {
			case <-stopResize:
				return
			case size, ok := <-ch:
				if !ok {
					ch = nil
					continue
				}
				if err := setWinsize(term, size); err != nil {
					c.log.Debug("resize the terminal", "err", err)
				}
			}
		}
	}()
	waited, killed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(killed)
		select {
		case <-waited:
		case <-ctx.Done():
			pfd.signal(unix.SIGKILL)
		}
	}()
	werr := pfd.wait()
	close(waited)
	<-killed
	st, rerr := pfd.reap()
	t := time.NewTimer(copyWait)
	select {
	case <-outDone:
	case <-t.C:
		c.log.Debug("terminal still open after the exec'd process's end", "wait", copyWait)
	}
	t.Stop()
	term.Close()
	<-outDone
	close(stopResize)
	<-resizeDone
	switch {
	case ctx.Err() != nil:
		return 0, ctx.Err()
	case werr != nil:
		return 0, fmt.Errorf("wait for the process: %w", werr)
	case rerr != nil:
		return 0, fmt.Errorf("wait for the process: %w", rerr)
	case !st.known:
		return 0, errors.New("wait for the process: its exit status was lost")
	}
	return st.code, nil
}

// latestSize is the last of the sizes already waiting on ch.
func latestSize(ch <-chan skiffrt.TerminalSize) (size skiffrt.TerminalSize, ok bool) {
	for {
		select {
		case s, open := <-ch:
			if !open {
				return size, ok
			}
			size, ok = s, true
		default:
			return size, ok
		}
	}
}

// setWinsize sets the terminal's size; the process gets SIGWINCH.
func setWinsize(term *os.File, size skiffrt.TerminalSize) error {
	rc, err := term.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: size.Height, Col: size.Width})
	}); err != nil {
		return err
	}
	return serr
}

// copyOut copies the terminal's output to w (nil: discarded) until the
// terminal ends (EIO once no process holds its slave end) or is closed.
// A writer that fails is dropped, the output still read, so that the
// process never blocks on a full terminal.
func copyOut(w io.Writer, term *os.File) {
	if w == nil {
		w = io.Discard
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := term.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				w = io.Discard
			}
		}
		if err != nil {
			return
		}
	}
}

// copyIn types r into the terminal, then the end-of-file character.
func copyIn(term *os.File, r io.Reader) {
	if _, err := io.Copy(term, r); err != nil {
		return
	}
	term.Write([]byte{4}) // ^D, VEOF
}

// readPidFile reads a pid file of runc.
func readPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: %q is not a pid", path, b)
	}
	return pid, nil
}

func openPidFile(path string) (pidfd, error) {
	pid, err := readPidFile(path)
	if err != nil {
		return pidfd{}, err
	}
	return openPidfd(pid)
}

// killAndReap kills a process and collects its exit status if it is a
// child, waiting at most reapWait.
func killAndReap(p pidfd) {
	p.signal(unix.SIGKILL)
	exited := make(chan error, 1)
	go func() { exited <- p.wait() }()
	t := time.NewTimer(reapWait)
	defer t.Stop()
	select {
	case err := <-exited:
		if err == nil {
			p.reap()
		}
	case <-t.C:
		p.close() // ends the wait
		<-exited
	}
}
