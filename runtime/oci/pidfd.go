package oci

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pPidfd is waitid's P_PIDFD id type.
const pPidfd = 3

// siginfo is the part of the kernel's siginfo_t that waitid fills for
// SIGCHLD (128 bytes in all).
type siginfo struct {
	Signo, Errno, Code int32
	_                  int32
	Pid                int32
	UID                uint32
	Status             int32
	_                  [100]byte
}

// pidfd is a process file descriptor, polled through Go's netpoller.
type pidfd struct{ f *os.File }

func openPidfd(pid int) (pidfd, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return pidfd{}, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	return pidfd{os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid))}, nil
}

// wait returns once the process has exited, or with an error once the
// pidfd is closed.
func (p pidfd) wait() error {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Read(func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return err == nil && n > 0
	})
}

// exitStatus is how a process ended.
type exitStatus struct {
	known  bool  // false: the process was not a child (no status)
	code   int32 // exit code, or 128+signal
	signal unix.Signal
}

// reap collects the exit status of an exited child; known is false if
// the process is not this process's child.
func (p pidfd) reap() (exitStatus, error) {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return exitStatus{}, err
	}
	var info siginfo
	var werr error
	err = rc.Control(func(fd uintptr) {
		for {
			_, _, e := unix.Syscall6(unix.SYS_WAITID, pPidfd, fd, uintptr(unsafe.Pointer(&info)), unix.WEXITED|unix.WNOHANG, 0, 0)
			if e == unix.EINTR {
				continue
			}
			if e != 0 {
				werr = e
			}
			return
		}
	})
	if err != nil {
		return exitStatus{}, err
	}
	if errors.Is(werr, unix.ECHILD) {
		return exitStatus{}, nil
	}
	if werr != nil {
		return exitStatus{}, fmt.Errorf("waitid: %w", werr)
	}
	if info.Pid == 0 {
		return exitStatus{}, fmt.Errorf("waitid: the process has not exited")
	}
	switch info.Code {
	case 1: // CLD_EXITED
		return exitStatus{known: true, code: info.Status}, nil
	default: // CLD_KILLED, CLD_DUMPED
		sig := unix.Signal(info.Status)
		return exitStatus{known: true, code: 128 + info.Status, signal: sig}, nil
	}
}

func (p pidfd) signal(sig unix.Signal) error {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.PidfdSendSignal(int(fd), sig, nil, 0) }); err != nil {
		return err
	}
	if errors.Is(serr, unix.ESRCH) {
		return nil // it has exited
	}
	return serr
}

func (p pidfd) close() error { return p.f.Close() }

// pid is the process the pidfd refers to, from /proc/self/fdinfo.
func (p pidfd) pid() (int, error) {
	if p.f == nil {
		return 0, fmt.Errorf("no pidfd")
	}
	// Not p.f.Fd(): it would make the descriptor blocking, and wait
	// polls it through the runtime's netpoller.
	rc, err := p.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var b []byte
	var rerr error
	if err := rc.Control(func(fd uintptr) { b, rerr = os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(int(fd))) }); err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, rerr
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("pidfd fdinfo has no Pid")
}
