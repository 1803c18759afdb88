package wasm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Sockets: a container that declares TCP ports (ContainerSpec.Ports) gets
// one listening socket per port, opened at Start by ContainerSpec.Listen
// (netns.ListenTCP, in the pod's network namespace). The module
// finds them as pre-opened sockets at the file descriptors that follow its
// pre-opened directories, in the order of the ports, where wazero's and
// wasmtime's --tcplisten put them, and in the environment variable
// SKIFF_LISTEN_FDS ("8080:3,9090:4", port:fd). In Go:
//
//	ln, err := net.FileListener(os.NewFile(3, "listener"))
//
// and it accepts (sock_accept), reads, writes and shuts down connections
// like any WASI preview1 host's.
//
// The runtime serves those sockets itself instead of with wazero's
// (experimental/sock): wazero's poll_oneoff reports a non-blocking socket
// ready at once, without asking the kernel, so a guest whose sockets are
// non-blocking (a Go guest's always are) would spin a core while it waits
// for a connection. Here poll_oneoff waits in ppoll(2) on the kernel's
// sockets, next to stdin and the guest's timers, and a guest waiting for
// connections uses no CPU.
//
// How: the WASI functions that take a file descriptor are wrapped. A
// descriptor the container's socket table holds is served here; any other
// goes to wazero's own function, which the runtime takes from the compiled
// wasi_snapshot_preview1 module (FunctionDefinition.GoFunction). wazero
// never hands out the listeners' descriptors to anything else: each is held
// in its table by an empty pre-opened directory, hidden from the guest
// (fd_prestat_get answers EBADF, which also ends a guest's scan of its
// pre-opens there). Accepted connections get descriptors from
// connFDBase up, far above anything wazero allocates.

// maxSockets bounds the sockets (listeners and connections) one container
// holds open; an accept past it fails with EMFILE, and the connection
// waits in the kernel's backlog.
const maxSockets = 1024

// connFDBase is the first guest file descriptor of an accepted connection.
const connFDBase = 1 << 30

// WASI preview1 values used here (the wasi_snapshot_preview1 witx).
const (
	errnoSuccess     = 0
	errnoAgain       = 6
	errnoBadf        = 8
	errnoFault       = 21
	errnoIntr        = 27
	errnoInval       = 28
	errnoMfile       = 33
	errnoNotsup      = 58
	filetypeSockStrm = 6
	fdflagNonblock   = 4
	eventClock       = 0
	eventFdRead      = 1
	eventFdWrite     = 2
	subclockAbstime  = 1
	eventHangup      = 1
	riRecvPeek       = 1
	riRecvWaitall    = 2
	sdflagRd         = 1
	sdflagWr         = 2
	clockRealtime    = 0
	clockMonotonic   = 1
	allRights        = 1<<29 - 1
)

// sock is one socket of a container: a listener or a connection.
type sock struct {
	fd       int      // the kernel's descriptor, always non-blocking
	file     *os.File // owns fd, for listeners; nil for connections
	listener bool
	nonblock bool // the guest's view: fd_fdstat_set_flags NONBLOCK
}

// sockTable holds a container's sockets by guest descriptor. Only the
// guest's thread touches socks; wake and closeAll may come from others.
type sockTable struct {
	socks  map[int32]*sock
	next   int32 // next connection descriptor
	stdin  int   // the kernel descriptor of the guest's stdin, for poll
	wakeFD int   // an eventfd written when the container is killed

	mu     sync.Mutex // guards wakeFD against close
	closed bool
}

type sockTableKey struct{}

// openSockets opens the listeners of spec at guest descriptors first,
// first+1, ... and an eventfd for kills. On error nothing is left open.
func openSockets(spec *ContainerSpec, first int32, stdin *os.File) (*sockTable, error) {
	t := &sockTable{socks: map[int32]*sock{}, next: connFDBase, stdin: -1, wakeFD: -1}
	if err := rawFD(stdin, func(fd int) { t.stdin = fd }); err != nil {
		return nil, fmt.Errorf("stdin: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	t.wakeFD = wake
	for i, port := range spec.Ports {
		f, err := spec.Listen(port)
		if err != nil {
			t.closeAll()
			return nil, fmt.Errorf("declared port %d: %w", port, err)
		}
		s := &sock{file: f, listener: true, nonblock: true, fd: -1}
		if err := rawFD(f, func(fd int) { s.fd = fd }); err != nil {
			f.Close()
			t.closeAll()
			return nil, fmt.Errorf("declared port %d: %w", port, err)
		}
		t.socks[first+int32(i)] = s
	}
	return t, nil
}

// rawFD hands f's descriptor to fn without changing its blocking mode (as
// File.Fd would).
func rawFD(f *os.File, fn func(int)) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { fn(int(fd)) })
}

// listenEnv is SKIFF_LISTEN_FDS for listeners at descriptors first...
func listenEnv(ports []int, first int32) string {
	parts := make([]string, len(ports))
	for i, p := range ports {
		parts[i] = fmt.Sprintf("%d:%d", p, first+int32(i))
	}
	return strings.Join(parts, ",")
}

// wake ends any wait of the guest in this table (a kill).
func (t *sockTable) wake() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		unix.Write(t.wakeFD, one[:])
	}
}

// closeAll closes every socket and the eventfd. The guest must be done.
func (t *sockTable) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.closed = true
	for fd, s := range t.socks {
		s.close()
		delete(t.socks, fd)
	}
	if t.wakeFD >= 0 {
		unix.Close(t.wakeFD)
	}
}

func (s *sock) close() {
	if s.file != nil {
		s.file.Close()
	} else {
		unix.Close(s.fd)
	}
}

// wait blocks until fd has events, or the container is killed (errnoIntr).
func (t *sockTable) wait(fd int, events int16) uint32 {
	fds := []unix.PollFd{{Fd: int32(fd), Events: events}, {Fd: int32(t.wakeFD), Events: unix.POLLIN}}
	for {
		_, err := unix.Ppoll(fds, nil, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return errnoOf(err)
		}
		if fds[1].Revents != 0 {
			return errnoIntr
		}
		return errnoSuccess
	}
}

// errnoOf maps a Linux errno to WASI's (the names are POSIX's in both).
func errnoOf(err error) uint32 {
	var e unix.Errno
	if !errors.As(err, &e) {
		return errnoIO
	}
	if n, ok := wasiErrnos[e]; ok {
		return n
	}
	return errnoIO
}

const errnoIO = 29

var wasiErrnos = map[unix.Errno]uint32{
	unix.EACCES: 2, unix.EADDRINUSE: 3, unix.EADDRNOTAVAIL: 4, unix.EAGAIN: errnoAgain,
	unix.EBADF: errnoBadf, unix.ECONNABORTED: 13, unix.ECONNREFUSED: 14, unix.ECONNRESET: 15,
	unix.EFAULT: errnoFault, unix.EHOSTUNREACH: 23, unix.EINTR: errnoIntr, unix.EINVAL: errnoInval,
	unix.EIO: errnoIO, unix.EISCONN: 30, unix.EMFILE: errnoMfile, unix.EMSGSIZE: 35,
	unix.ENETDOWN: 38, unix.ENETUNREACH: 40, unix.ENFILE: 41, unix.ENOBUFS: 42, unix.ENOMEM: 48,
	unix.ENOTCONN: 53, unix.ENOTSOCK: 57, unix.EOPNOTSUPP: errnoNotsup, unix.EPIPE: 64,
	unix.ETIMEDOUT: 73,
}
