package oci

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	skiffrt "skiff.dev/skiff/runtime"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// copyWait bounds how long the end of a container waits for its output
// to be copied out (the FIFOs reach end of file once every process of the
// container has exited).
const copyWait = 2 * time.Second

// statusFile, in the bundle, holds the container's start and, once
// known, its exit, for a later node process.
const statusFile = "status.json"

// Container is one runc container. Its methods are safe for concurrent
// use. One goroutine (watch) owns the end of the init process.
type Container struct {
	r      *Runtime
	id     string
	spec   skiffrt.ContainerSpec
	bundle string
	cg     cgroup
	proc   specs.Process // the container's process, the base of Exec's
	log    *slog.Logger
	// done is closed once the container has exited and its output is
	// copied; watcherDone once the watcher has returned (exit or Close).
	done, watcherDone chan struct{}
	copiers           sync.WaitGroup
	saveMu            sync.Mutex // serializes saveStatus

	mu          sync.Mutex
	status      skiffrt.Status
	pidfd       pidfd // of the init, until it has exited or the runtime is closed
	readers     []*os.File
	oomBase     uint64 // the cgroup's OOM kills before the container ran
	starting    bool
	termSent    bool
	killAt      time.Time
	killTimer   *time.Timer
	budgetTimer *time.Timer
	stopReason  string // of the first kill
	stopMsg     string
	startErr    string
	cpuFinal    time.Duration
	removed     bool
	detached    bool

	att attachState // attach sessions (attach.go)
}

func newContainer(r *Runtime, spec skiffrt.ContainerSpec, cgPath string) *Container {
	return &Container{
		r:           r,
		id:          spec.ID,
		spec:        spec,
		bundle:      r.bundle(spec.ID),
		cg:          cgroup{fs: r.cgroups, path: cgPath},
		log:         r.log.With("container", spec.ID),
		done:        make(chan struct{}),
		watcherDone: make(chan struct{}),
	}
}

// copyOutput copies the FIFO readers and a TTY container's terminal (or
// nil) to the spec's writers and the attached sessions; the terminal
// carries both streams, as stdout.
func (c *Container) copyOutput(stdout, stderr, term *os.File) {
	c.readers = []*os.File{stdout, stderr}
	ws := []io.Writer{c.spec.Stdout, c.spec.Stderr}
	if term != nil {
		c.readers = append(c.readers, term)
		ws = append(ws, c.spec.Stdout)
	}
	for i, w := range ws {
		c.copiers.Add(1)
		go func(rd *os.File) {
			defer c.copiers.Done()
			c.pump(w, rd, i == 1)
		}(c.readers[i])
	}
}

// watch waits for the init's exit, learns how it ended and finishes the
// container; it returns early if the pidfd is closed (Close).
func (c *Container) watch(p pidfd, pid int) {
	defer close(c.watcherDone)
	defer c.r.reaper.unclaim(pid)
	if err := p.wait(); err != nil {
		return // detached
	}
	st, err := p.reap()
	if err != nil {
		c.log.Warn("collect the exit status of the container's init", "err", err)
	}
	code, reason, msg := c.classify(st)
	// Output written just before the end is still in the FIFOs.
	copied := make(chan struct{})
	go func() { c.copiers.Wait(); close(copied) }()
	t := time.NewTimer(copyWait)
	select {
	case <-copied:
	case <-t.C:
		c.log.Warn("output still open after the container's end", "wait", copyWait)
	}
	t.Stop()
	c.finish(code, reason, msg)
}

// classify turns the init's end into an exit code, reason and message.
func (c *Container) classify(st exitStatus) (int32, string, string) {
	c.mu.Lock()
	stopReason, stopMsg, startErr, base := c.stopReason, c.stopMsg, c.startErr, c.oomBase
	c.mu.Unlock()
	oom := c.cg.oomKills() > base
	oomMsg := "memory limit reached"
	if c.spec.MemoryLimit > 0 {
		oomMsg = fmt.Sprintf("memory limit of %d bytes reached", c.spec.MemoryLimit)
	}
	switch {
	case startErr != "":
		return skiffrt.ExitCodeStartError, skiffrt.ReasonStartError, startErr
	case !st.known && oom:
		return skiffrt.ExitCodeStopped, skiffrt.ReasonOOMKilled, oomMsg
	case !st.known:
		return skiffrt.ExitCodeUnknown, skiffrt.ReasonUnknown, "exited while no node process watched it"
	case st.signal == unix.SIGKILL && oom && stopMsg == "":
		return st.code, skiffrt.ReasonOOMKilled, oomMsg
	case stopMsg != "" && st.code != 0:
		return st.code, stopReason, stopMsg
	case st.code == 0:
		return 0, skiffrt.ReasonCompleted, ""
	case st.signal != 0:
		return st.code, skiffrt.ReasonError, "killed by " + unix.SignalName(st.signal)
	}
	return st.code, skiffrt.ReasonError, ""
}

// finish records the container's end and closes done.
func (c *Container) finish(code int32, reason, msg string) {
	c.finishWith(skiffrt.Status{ExitCode: code, Reason: reason, Message: msg, FinishedAt: time.Now()})
}

// finishWith records the end in end (StartedAt: the container's own if
// zero) and closes done.
func (c *Container) finishWith(end skiffrt.Status) {
	cpu, _ := c.cg.usage()
	c.mu.Lock()
	if c.status.State == skiffrt.StateExited {
		c.mu.Unlock()
		return
	}
	if end.StartedAt.IsZero() {
		end.StartedAt = c.status.StartedAt
	}
	end.State = skiffrt.StateExited
	c.status = end
	code, reason, msg := end.ExitCode, end.Reason, end.Message
	c.cpuFinal = cpu
	c.stopTimersLocked()
	if c.pidfd.f != nil {
		c.pidfd.close()
		c.pidfd = pidfd{}
	}
	c.mu.Unlock()
	if err := c.saveStatus(); err != nil {
		c.log.Error("record the container's exit", "err", err)
	}
	c.att.hub.end()
	c.releaseInput()
	close(c.done)
	c.log.Debug("container exited", "exit_code", code, "reason", reason, "message", msg)
}

func (c *Container) stopTimersLocked() {
	if c.killTimer != nil {
		c.killTimer.Stop()
	}
	if c.budgetTimer != nil {
		c.budgetTimer.Stop()
	}
}

// detach stops watching the container and copying its output (Close).
func (c *Container) detach() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.detached = true
	c.stopTimersLocked()
	if c.pidfd.f != nil {
		c.pidfd.close()
		c.pidfd = pidfd{}
	}
	for _, rd := range c.readers {
		rd.Close()
	}
	c.att.hub.end()
	c.releaseInput()
}

// Done is closed once the container has exited and its output is copied.
func (c *Container) Done() <-chan struct{} { return c.done }

// Status returns a snapshot of the container's state.
func (c *Container) Status() skiffrt.Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Stats reads the container's cgroup: CPU time, and memory in use less
// the inactive file cache. It starts no process.
func (c *Container) Stats() skiffrt.Stats {
	c.mu.Lock()
	exited, cpuFinal := c.status.State == skiffrt.StateExited, c.cpuFinal
	c.mu.Unlock()
	if exited {
		return skiffrt.Stats{Timestamp: time.Now(), CPUTime: cpuFinal}
	}
	cpu, mem := c.cg.usage()
	return skiffrt.Stats{Timestamp: time.Now(), CPUTime: cpu, MemoryBytes: mem}
}

// savedStatus is statusFile's content.
type savedStatus struct {
	State      string    `json:"state"` // "running" or "exited"
	ExitCode   int32     `json:"exitCode"`
	Reason     string    `json:"reason,omitempty"`
	Message    string    `json:"message,omitempty"`
	StartedAt  time.Time `json:"startedAt"`
	FinishedAt time.Time `json:"finishedAt"`
}

// saveStatus writes the container's status to the bundle, atomically.
// Saves are serialized and each writes the status of its time, so the
// last one written is the latest.
func (c *Container) saveStatus() error {
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	c.mu.Lock()
	st := c.status
	c.mu.Unlock()
	b, err := json.Marshal(savedStatus{
		State: st.State.String(), ExitCode: st.ExitCode, Reason: st.Reason, Message: st.Message,
		StartedAt: st.StartedAt, FinishedAt: st.FinishedAt,
	})
	if err != nil {
		return err
	}
	tmp := filepath.Join(c.bundle, statusFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(c.bundle, statusFile))
}

// loadStatus reads the bundle's status file; ok is false if there is none.
func loadStatus(bundle string) (skiffrt.Status, bool, error) {
	b, err := os.ReadFile(filepath.Join(bundle, statusFile))
	if os.IsNotExist(err) {
		return skiffrt.Status{}, false, nil
	}
	if err != nil {
		return skiffrt.Status{}, false, err
	}
	var s savedStatus
	if err := json.Unmarshal(b, &s); err != nil {
		return skiffrt.Status{}, false, fmt.Errorf("read %s: %w", statusFile, err)
	}
	st := skiffrt.Status{
		State: skiffrt.StateRunning, ExitCode: s.ExitCode, Reason: s.Reason, Message: s.Message,
		StartedAt: s.StartedAt, FinishedAt: s.FinishedAt,
	}
	if s.State == skiffrt.StateExited.String() {
		st.State = skiffrt.StateExited
	}
	return st, true, nil
}
