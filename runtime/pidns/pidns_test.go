package pidns

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"skiff.dev/skiff/netns/netnstest"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root (a new PID namespace takes CAP_SYS_ADMIN)")
	}
}

func startHolder(t *testing.T) Holder {
	t.Helper()
	h, err := Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Stop(context.Background(), h) })
	return h
}

// TestHolder: a holder is PID 1 of a namespace of its own, named pause;
// Check knows it; Stop ends it, and Check then says it is gone.
func TestHolder(t *testing.T) {
	needRoot(t)
	h := startHolder(t)
	if err := Check(h); err != nil {
		t.Fatalf("Check of a running holder: %v", err)
	}
	mine, _ := os.Readlink("/proc/self/ns/pid")
	if h.NS == mine || !strings.HasPrefix(h.NS, "pid:[") {
		t.Errorf("holder namespace %q; want a new one (this process: %q)", h.NS, mine)
	}
	status, err := os.ReadFile("/proc/" + strconv.Itoa(h.PID) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Name:\tpause\n", "\nNSpid:\t" + strconv.Itoa(h.PID) + "\t1\n"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("holder status lacks %q:\n%s", want, status)
		}
	}
	if err := Stop(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	if err := Check(h); !errors.Is(err, ErrGone) {
		t.Fatalf("Check after Stop = %v; want ErrGone", err)
	}
	if err := Stop(context.Background(), h); err != nil {
		t.Fatalf("second Stop = %v; want nil (idempotent)", err)
	}
}

// TestCheckRefusesOthers: a record whose start time, namespace or pid do
// not match is not the holder, so nothing is signalled through it.
func TestCheckRefusesOthers(t *testing.T) {
	needRoot(t)
	h := startHolder(t)
	for name, other := range map[string]Holder{
		"start time": {PID: h.PID, StartTime: h.StartTime + 1, NS: h.NS},
		"namespace":  {PID: h.PID, StartTime: h.StartTime, NS: "pid:[1]"},
		"this pid":   {PID: os.Getpid(), StartTime: h.StartTime, NS: h.NS},
		"no pid":     {},
	} {
		if err := Check(other); !errors.Is(err, ErrGone) {
			t.Errorf("%s: Check = %v; want ErrGone", name, err)
		}
		if err := Stop(context.Background(), other); err != nil {
			t.Errorf("%s: Stop = %v", name, err)
		}
	}
	if err := Check(h); err != nil {
		t.Fatalf("the holder did not survive Stop of records that are not it: %v", err)
	}
}

// TestHolderReapsOrphans: a process of the namespace whose parent exits
// becomes the holder's child; the holder reaps it when it exits.
func TestHolderReapsOrphans(t *testing.T) {
	needRoot(t)
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("skipped: no /bin/sh")
	}
	h := startHolder(t)
	fd, err := os.Open(h.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	// A child of this process in the holder's namespace (setns for PID
	// namespaces applies to children): a shell that starts a sleep and
	// exits, orphaning it.
	pidfile := t.TempDir() + "/pid"
	done := make(chan error, 1)
	go func() {
		done <- inNamespace(int(fd.Fd()), func() error {
			return runShell("sleep 2 >/dev/null 2>&1 & echo $! > " + pidfile)
		})
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	inner := strings.TrimSpace(string(b))
	if inner == "" || inner == "1" {
		t.Fatalf("orphan pid %q", inner)
	}
	// Find the orphan by its pid in the namespace, then see it reaped.
	orphan := findByNSpid(t, h, inner)
	if orphan == 0 {
		t.Fatalf("no process of pid %s in the holder's namespace is the holder's child", inner)
	}
	netnstest.Eventually(t, 10*time.Second, func() bool {
		_, err := os.Stat("/proc/" + strconv.Itoa(orphan))
		return errors.Is(err, os.ErrNotExist)
	}, func() string { return "the holder reaps its orphan" })
}

// findByNSpid returns the node pid of the process whose pid in h's
// namespace is inner and whose parent is the holder (0: none).
func findByNSpid(t *testing.T, h Holder, inner string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ns, _ := os.Readlink("/proc/" + e.Name() + "/ns/pid")
		status, _ := os.ReadFile("/proc/" + e.Name() + "/status")
		if ns == h.NS && strings.Contains(string(status), "\t"+inner+"\n") && strings.Contains(string(status), "\nPPid:\t"+strconv.Itoa(h.PID)+"\n") {
			return pid
		}
	}
	return 0
}

// inNamespace runs f on a locked thread that has joined PID namespace fd
// for its children; the thread is then discarded (not unlocked).
func inNamespace(fd int, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		lockOSThread()
		if err := unix.Setns(fd, unix.CLONE_NEWPID); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

func lockOSThread() { runtime.LockOSThread() }

func runShell(script string) error {
	out, err := exec.Command("/bin/sh", "-c", script).CombinedOutput()
	if err != nil {
		return fmt.Errorf("sh -c %q: %w: %s", script, err, out)
	}
	return nil
}
