package oci

import (
	"bytes"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The reaper: being a child subreaper, the node process inherits orphans
// other than the containers' inits it watches: processes of `runc exec`
// whose runc was killed, runc's own init stages when a runc call was cut
// short, inits of containers an earlier node process (a child of this one,
// in tests) left behind. Their zombies would pile up. The reaper reaps them
// without ever calling wait4(-1), which would steal the exit status of
// children that os/exec (here or in other packages) waits for by pid or
// pidfd: on SIGCHLD, and every reapInterval, it scans /proc for zombies
// whose parent is this process and reaps, by pid, only those that
// os/exec cannot have started:
//   - a process of a nested PID namespace (NSpid has more than one
//     entry) that is not its namespace's init: an exec'd or forked process
//     of a container, unless an Exec claims it (a process run with a
//     terminal, whose runc exits at once) or, while its pid is not yet
//     claimed, holds it;
//   - a runc init stage of the node's PID namespace (comm "runc:[...]";
//     the last stage, in the container's namespace, is its init);
//   - a container init (PID 1 of a nested namespace) no watcher claims,
//     while no Create, Adopt or Exec is between learning a pid and
//     claiming it (hold).
// The state is the process's, shared by every Runtime in it.

// reapInterval is the period of the scan SIGCHLD may have missed.
const reapInterval = 30 * time.Second

type reaperState struct {
	mu      sync.Mutex
	refs    int
	holds   int
	claimed map[int]int // pid -> claims
	quit    chan struct{}
	done    chan struct{}
	log     *slog.Logger
}

var theReaper = reaperState{claimed: map[int]int{}}

// reaper is one Runtime's reference to theReaper.
type reaper struct{ once sync.Once }

func startReaper(log *slog.Logger) *reaper {
	rp := &theReaper
	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.refs++
	if rp.refs == 1 {
		rp.quit, rp.done, rp.log = make(chan struct{}), make(chan struct{}), log
		go rp.loop(rp.quit, rp.done)
	}
	return &reaper{}
}

// stop drops the reference; the last stops the reaper's goroutine.
func (r *reaper) stop() {
	r.once.Do(func() {
		rp := &theReaper
		rp.mu.Lock()
		rp.refs--
		var quit, done chan struct{}
		if rp.refs == 0 {
			quit, done = rp.quit, rp.done
		}
		rp.mu.Unlock()
		if quit != nil {
			close(quit)
			<-done
		}
	})
}

// hold keeps unclaimed processes of nested PID namespaces (inits and
// exec'd processes) from being reaped until release is called.
func (r *reaper) hold() (release func()) {
	rp := &theReaper
	rp.mu.Lock()
	rp.holds++
	rp.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			rp.mu.Lock()
			rp.holds--
			rp.mu.Unlock()
		})
	}
}

// claim marks pid as watched: the reaper leaves it to its watcher.
func (r *reaper) claim(pid int) {
	rp := &theReaper
	rp.mu.Lock()
	rp.claimed[pid]++
	rp.mu.Unlock()
}

func (r *reaper) unclaim(pid int) {
	rp := &theReaper
	rp.mu.Lock()
	if rp.claimed[pid]--; rp.claimed[pid] <= 0 {
		delete(rp.claimed, pid)
	}
	rp.mu.Unlock()
}

func (rp *reaperState) loop(quit, done chan struct{}) {
	defer close(done)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGCHLD)
	defer signal.Stop(sig)
	tick := time.NewTicker(reapInterval)
	defer tick.Stop()
	for {
		rp.scan()
		select {
		case <-quit:
			return
		case <-sig:
		case <-tick.C:
		}
	}
}

// scan reaps the zombie children of the process that no one else waits
// for (see above).
func (rp *reaperState) scan() {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	self := os.Getpid()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, state, ppid, ok := procStat(pid)
		if !ok || state != 'Z' || ppid != self {
			continue
		}
		nested := inNestedPidNS(pid)
		reap := (strings.HasPrefix(comm, "runc:[") && !nested) ||
			(nested && rp.claimed[pid] == 0 && rp.holds == 0)
		if !reap {
			continue
		}
		var ws unix.WaitStatus
		if got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err == nil && got == pid && rp.log != nil {
			rp.log.Debug("reaped an orphan", "pid", pid, "comm", comm)
		}
	}
}

// procStat reads a process's name, state and parent from /proc/<pid>/stat.
func procStat(pid int) (comm string, state byte, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, 0, false
	}
	open, closing := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || closing < open {
		return "", 0, 0, false
	}
	f := strings.Fields(string(b[closing+1:]))
	if len(f) < 2 || len(f[0]) != 1 {
		return "", 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return string(b[open+1 : closing]), f[0][0], ppid, err == nil
}

// inNestedPidNS says whether a process lives in a PID namespace nested in
// the node's.
func inNestedPidNS(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
			return len(strings.Fields(v)) > 1
		}
	}
	return false
}
