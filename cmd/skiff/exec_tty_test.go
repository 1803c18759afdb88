package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pty is a pseudoterminal pair: the slave is the user's terminal that
// skiff reads, the master the keyboard and window the test drives.
type pty struct{ master, slave *os.File }

func openPTY(t *testing.T) pty {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("skipped: no pseudoterminals: %v", err)
	}
	var n int
	err = control(m, func(fd int) error {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
			return err
		}
		n, err = unix.IoctlGetInt(fd, unix.TIOCGPTN)
		return err
	})
	if err != nil {
		m.Close()
		t.Fatalf("unlock the pseudoterminal: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return pty{master: m, slave: s}
}

func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// resize sets the terminal's size and tells the process, as a terminal
// emulator does (SIGWINCH reaches skiff's exec, which runs in the test).
func (p pty) resize(t *testing.T, rows, cols uint16) {
	t.Helper()
	if err := control(p.master, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	}); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGWINCH)
}

func (p pty) typeIn(t *testing.T, s string) {
	t.Helper()
	if _, err := p.master.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// hasLine says whether out has line, carriage returns and blanks aside.
func hasLine(out, line string) bool {
	for _, l := range strings.Split(strings.ReplaceAll(out, "\r", ""), "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}

// checkExecTTY runs `skiff exec -it POD -c CTR -- sh` on a terminal of
// its own: the shell's terminal has skiff's terminal's size, follows it
// when it changes, runs what is typed, and its exit code is skiff's.
func checkExecTTY(t *testing.T, c *cluster, pod, ctr string) {
	t.Helper()
	p := openPTY(t)
	p.resize(t, 40, 120)
	var out lockedBuffer
	root := newRoot()
	root.SetIn(p.slave)
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"--server", c.server, "--config", c.config, "exec", "-it", pod, "-c", ctr, "--", "sh"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	result := make(chan error, 1)
	go func() { result <- root.ExecuteContext(ctx) }()
	for _, size := range [][2]uint16{{40, 120}, {30, 100}} {
		p.resize(t, size[0], size[1])
		want := fmt.Sprintf("%d %d", size[0], size[1])
		eventually(t, 20*time.Second, func() bool {
			p.typeIn(t, "busybox stty size\n")
			return hasLine(out.String(), want)
		}, func() string { return fmt.Sprintf("skiff exec -it: no line %q in %q", want, out.String()) })
	}
	p.typeIn(t, "busybox tty; exit 7\n")
	select {
	case err := <-result:
		var ee exitError
		if !errors.As(err, &ee) || ee.code != 7 {
			t.Errorf("skiff exec -it ... sh; exit 7: %v, want exit code 7; output %q", err, out.String())
		}
	case <-ctx.Done():
		t.Fatalf("skiff exec -it still runs after exit 7; output %q", out.String())
	}
	if !strings.Contains(out.String(), "/dev/pts/") {
		t.Errorf("skiff exec -it: busybox tty printed no /dev/pts path: %q", out.String())
	}
}
