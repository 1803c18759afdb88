package oci

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// maxSocketPath is the longest path a unix socket may have: sun_path
// holds 108 bytes, the terminating NUL included.
const maxSocketPath = 107

// consoleWait bounds the wait for runc's connection to a console socket
// and for the terminal it sends there.
const consoleWait = 10 * time.Second

// consoleSocket is the unix socket to which runc (`exec --console-socket`)
// sends the master end of a process's pseudoterminal.
type consoleSocket struct {
	ln   *net.UnixListener
	path string
	dir  string // a directory made for the socket alone, removed with it; or ""
}

// listenConsole listens on console.sock in dir, or, if that path is too
// long for a unix socket, in a directory of its own made under each of
// fallbacks in turn.
func listenConsole(dir string, fallbacks ...string) (*consoleSocket, error) {
	const name = "console.sock"
	s := &consoleSocket{path: filepath.Join(dir, name)}
	for _, parent := range fallbacks {
		if len(s.path) <= maxSocketPath {
			break
		}
		// The longest directory MkdirTemp makes: parent/tty-<10 digits>.
		if len(filepath.Join(parent, "tty-0123456789", name)) > maxSocketPath {
			continue
		}
		d, err := os.MkdirTemp(parent, "tty-")
		if err != nil {
			return nil, fmt.Errorf("make a directory for the console socket: %w", err)
		}
		s.dir, s.path = d, filepath.Join(d, name)
	}
	if len(s.path) > maxSocketPath {
		return nil, fmt.Errorf("console socket %s: longer than the %d bytes a unix socket path may have", s.path, maxSocketPath)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: s.path, Net: "unix"})
	if err != nil {
		s.removeDir()
		return nil, fmt.Errorf("listen on the console socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	s.ln = ln
	return s, nil
}

// receive accepts one connection and returns the terminal sent over it,
// non-blocking, within wait.
func (s *consoleSocket) receive(wait time.Duration) (*os.File, error) {
	deadline := time.Now().Add(wait)
	if err := s.ln.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("receive the terminal: %w", err)
	}
	conn, err := s.ln.AcceptUnix()
	if err != nil {
		return nil, fmt.Errorf("receive the terminal: accept runc's connection: %w", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("receive the terminal: %w", err)
	}
	// runc sends the terminal's name with one descriptor; room is left for
	// a few, so that extra ones are not lost open but closed.
	name := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, flags, _, err := conn.ReadMsgUnix(name, oob)
	if err != nil {
		return nil, fmt.Errorf("receive the terminal: %w", err)
	}
	fds, err := unixRights(oob[:oobn])
	if err != nil {
		return nil, fmt.Errorf("receive the terminal: %w", err)
	}
	for _, fd := range fds[min(1, len(fds)):] {
		unix.Close(fd)
	}
	switch {
	case len(fds) == 0:
		return nil, errors.New("receive the terminal: runc sent no file descriptor")
	case flags&unix.MSG_CTRUNC != 0:
		unix.Close(fds[0])
		return nil, errors.New("receive the terminal: control message truncated")
	}
	fd := fds[0]
	unix.CloseOnExec(fd)
	// Non-blocking, the terminal is polled by Go's netpoller: Close ends
	// a pending Read or Write.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("receive the terminal: %w", err)
	}
	return os.NewFile(uintptr(fd), string(name[:n])), nil
}

// unixRights is the file descriptors of SCM_RIGHTS messages in oob.
func unixRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			return nil, fmt.Errorf("parse control message: %w", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// close stops listening and removes the socket and its directory.
func (s *consoleSocket) close() {
	s.ln.Close()
	os.Remove(s.path)
	s.removeDir()
}

func (s *consoleSocket) removeDir() {
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}
