// Package pidns starts, finds and stops the holders of pods' PID
// namespaces. A holder is a tiny process, PID 1 of a new PID namespace,
// that the OCI containers of a pod join when the pod shares one process
// namespace (CRI namespace_options.pid POD): what containerd's pause
// container does, without an image. It reaps the zombies the namespace's
// orphans leave, and exits on SIGTERM or SIGINT; its exit kills every
// process left in the namespace. It outlives the node process that started
// it, as the containers do, so a restarted node finds it again by its
// Holder record (Check).
//
// The holder is the node's own binary, re-executed (/proc/self/exe) in a
// hidden role: this package's init function runs the holder when the
// process is PID 1 of its namespace and has the role in its environment,
// and never returns. So any binary that imports this package (skiff, and
// the test binaries of the packages that start holders) can start one.
// The package owns nothing else: which pods get a holder is the CRI
// server's choice.
package pidns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Name is the holder's process name (its comm and argv[0]), as ps shows it.
const Name = "pause"

// roleEnv marks, in the environment of a re-executed binary, the holder's
// role.
const roleEnv, roleHolder = "_SKIFF_PIDNS_ROLE", "holder"

// ErrGone is returned by Check when the holder has exited, or its pid now
// names another process.
var ErrGone = errors.New("pid namespace holder is gone")

func init() {
	if os.Getenv(roleEnv) != roleHolder || os.Getpid() != 1 {
		return
	}
	hold()
}

// hold is the holder's body: it names itself, tells its starter (fd 3)
// that it is ready, reaps the zombies of its namespace and exits on
// SIGTERM or SIGINT.
func hold() {
	os.Unsetenv(roleEnv)
	// The comm of an executable run as /proc/self/exe is "exe".
	_ = os.WriteFile("/proc/self/comm", []byte(Name), 0)
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGCHLD)
	if ready := os.NewFile(3, "ready"); ready != nil {
		ready.Write([]byte{1})
		ready.Close()
	}
	for sig := range sigs {
		if sig != unix.SIGCHLD {
			os.Exit(0)
		}
		for {
			// Every process of the namespace whose parent exited is a
			// child of PID 1; the holder starts none of its own.
			pid, err := unix.Wait4(-1, nil, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

// Holder identifies a running holder: its pid (in the node's PID
// namespace), its start time and its namespace, so that a pid reused by
// another process is never taken for it.
type Holder struct {
	PID int `json:"pid"`
	// StartTime is the process's start time, in clock ticks after boot
	// (/proc/<pid>/stat field 22).
	StartTime uint64 `json:"startTime"`
	// NS is the namespace's link text, as "pid:[4026532281]".
	NS string `json:"ns"`
}

// Path is the path of the holder's PID namespace, for an OCI runtime spec
// (linux.namespaces[].path).
func (h Holder) Path() string { return "/proc/" + strconv.Itoa(h.PID) + "/ns/pid" }

// startTimeout bounds Start's wait for the holder to be ready.
const startTimeout = 10 * time.Second

// Start starts a holder: the running binary, re-executed as PID 1 of a new
// PID namespace, in a session of its own, its working directory /, its
// stdio /dev/null, in the node process's cgroups. It returns once the
// holder handles signals. The holder outlives the caller; Stop ends it.
func Start(ctx context.Context) (Holder, error) {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	r, w, err := os.Pipe()
	if err != nil {
		return Holder{}, fmt.Errorf("start pid namespace holder: %w", err)
	}
	defer r.Close()
	cmd := &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       []string{Name},
		Env:        []string{roleEnv + "=" + roleHolder, "GOMAXPROCS=1"},
		Dir:        "/",
		ExtraFiles: []*os.File{w},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: unix.CLONE_NEWPID,
			Setsid:     true,
		},
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return Holder{}, fmt.Errorf("start pid namespace holder: %w", err)
	}
	// While this process lives, it is the holder's parent and reaps it.
	go cmd.Wait()
	pid := cmd.Process.Pid
	fail := func(err error) (Holder, error) {
		_ = unix.Kill(pid, unix.SIGKILL)
		return Holder{}, fmt.Errorf("start pid namespace holder: %w", err)
	}
	got := make(chan error, 1)
	go func() {
		b := make([]byte, 1)
		_, err := r.Read(b)
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			return fail(fmt.Errorf("the holder exited before it was ready: %w", err))
		}
	case <-ctx.Done():
		r.SetReadDeadline(time.Now()) // ends the reader
		return fail(fmt.Errorf("the holder was not ready: %w", ctx.Err()))
	}
	h := Holder{PID: pid}
	if h.StartTime, _, err = stat(pid); err != nil {
		return fail(err)
	}
	if h.NS, err = os.Readlink(h.Path()); err != nil {
		return fail(err)
	}
	return h, nil
}

// Check reports whether h still runs: nil, or ErrGone (wrapped) when its
// pid names no process, a zombie, or another process.
func Check(h Holder) error {
	if h.PID <= 0 {
		return fmt.Errorf("%w: pid %d", ErrGone, h.PID)
	}
	start, state, err := stat(h.PID)
	if err != nil || start != h.StartTime || state == 'Z' || state == 'X' {
		return fmt.Errorf("%w: pid %d is not the holder started at tick %d", ErrGone, h.PID, h.StartTime)
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(h.PID) + "/cmdline")
	if err != nil || string(cmdline) != Name+"\x00" {
		return fmt.Errorf("%w: pid %d runs %q, not the holder", ErrGone, h.PID, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
	}
	if ns, err := os.Readlink(h.Path()); err != nil || ns != h.NS {
		return fmt.Errorf("%w: pid %d is in namespace %q, not %q", ErrGone, h.PID, ns, h.NS)
	}
	return nil
}

// stopGrace is how long Stop waits after SIGTERM before SIGKILL, and again
// after SIGKILL.
const stopGrace = 5 * time.Second

// Stop ends h, and with it every process left in its namespace: SIGTERM,
// then SIGKILL if it has not exited within a grace period or before ctx
// ends. A holder that is already gone is no error (Stop is idempotent).
func Stop(ctx context.Context, h Holder) error {
	if h.PID <= 0 {
		return nil
	}
	fd, err := unix.PidfdOpen(h.PID, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stop pid namespace holder %d: %w", h.PID, err)
	}
	defer unix.Close(fd)
	// The pidfd names the process that had the pid when it was opened:
	// once it is checked to be the holder, signals reach no other.
	if err := Check(h); err != nil {
		return nil
	}
	for _, sig := range []unix.Signal{unix.SIGTERM, unix.SIGKILL} {
		if err := unix.PidfdSendSignal(fd, sig, nil, 0); errors.Is(err, unix.ESRCH) {
			return nil
		} else if err != nil {
			return fmt.Errorf("stop pid namespace holder %d: %w", h.PID, err)
		}
		if exited(ctx, fd, stopGrace) {
			return nil
		}
	}
	return fmt.Errorf("stop pid namespace holder %d: still running after SIGKILL", h.PID)
}

// exited waits until the process of pidfd fd exits, for at most d or
// until ctx ends, and reports whether it did.
func exited(ctx context.Context, fd int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	for {
		wait := time.Until(deadline)
		if wait < 0 {
			wait = 0
		}
		// A pidfd is readable once its process has exited.
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(min(wait, 100*time.Millisecond)/time.Millisecond))
		if n > 0 {
			return true
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return false
		}
		if wait == 0 || ctx.Err() != nil {
			return false
		}
	}
}

// stat reads a process's start time and state from /proc/<pid>/stat.
func stat(pid int) (start uint64, state byte, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command, field 2, is in parentheses and may hold anything:
	// fields are counted after its last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("read /proc/%d/stat: no command field", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("read /proc/%d/stat: %d fields", pid, len(f)+2)
	}
	start, err = strconv.ParseUint(f[19], 10, 64) // field 22
	if err != nil {
		return 0, 0, fmt.Errorf("read /proc/%d/stat: start time: %w", pid, err)
	}
	return start, f[0][0], nil
}
