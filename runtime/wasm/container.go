package wasm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	goruntime "runtime"
	"strings"
	"sync"
	"time"

	skiffrt "skiff.dev/skiff/runtime"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"
	"golang.org/x/sys/unix"
)

// The runtime-neutral types, under the names this package's callers and
// tests have always used.
type (
	ContainerSpec = skiffrt.ContainerSpec
	Mount         = skiffrt.Mount
	State         = skiffrt.State
	Status        = skiffrt.Status
	Stats         = skiffrt.Stats
)

// Exit codes, reasons and states: runtime's.
const (
	ExitCodeTrap            = skiffrt.ExitCodeTrap
	ExitCodeStopped         = skiffrt.ExitCodeStopped
	ExitCodeStartError      = skiffrt.ExitCodeStartError
	ReasonCompleted         = skiffrt.ReasonCompleted
	ReasonError             = skiffrt.ReasonError
	ReasonStartError        = skiffrt.ReasonStartError
	ReasonOOMKilled         = skiffrt.ReasonOOMKilled
	ReasonCPUBudgetExceeded = skiffrt.ReasonCPUBudgetExceeded
	StateCreated            = skiffrt.StateCreated
	StateRunning            = skiffrt.StateRunning
	StateExited             = skiffrt.StateExited
)

// Container is one module instance and its lifecycle. Its methods are safe
// for concurrent use.
type Container struct {
	r     *Runtime
	spec  ContainerSpec
	entry *moduleEntry // the compiled module, pinned until the container exits
	mod   wazero.CompiledModule
	mem   *memoryLimiter
	log   *slog.Logger
	done  chan struct{}

	mu          sync.Mutex
	status      Status
	cancel      context.CancelFunc // set by Start; cancels the run context: the kill
	stdin       *stopPipe          // set by Start; its end of file asks the module to stop
	inst        api.Module         // the instance while _start runs
	stopReason  string             // the reason of a kill, once killed
	stopMsg     string             // why the container was killed, once killed
	killAt      time.Time          // when a graceful stop turns into a kill, once one is asked
	killTimer   *time.Timer        // fires at killAt
	budgetTimer *time.Timer        // checks the CPU budget
	socks       *sockTable         // the guest's sockets, while it runs with any
	clock       threadClock        // of the thread running the guest, while it runs (0 otherwise)
	cpuBase     time.Duration      // clock's reading when the thread was locked to the guest
	cpuUsed     time.Duration      // once the guest thread is released
}

func newContainer(r *Runtime, spec ContainerSpec, e *moduleEntry) *Container {
	return &Container{
		r:     r,
		spec:  spec,
		entry: e,
		mod:   e.mod,
		mem:   newMemoryLimiter(spec.MemoryLimit),
		log:   r.log.With("container", spec.ID),
		done:  make(chan struct{}),
	}
}

// Start instantiates the module and runs _start on its own goroutine. It
// returns once the instance exists and _start has been called, with an error
// if instantiation failed (the container is then Exited, reason
// "StartError"). Start may be called once; if it cannot make the stdin pipe
// (out of file descriptors) it fails and the container stays Created.
func (c *Container) Start(ctx context.Context) error {
	stdin, err := newStopPipe()
	if err != nil {
		return fmt.Errorf("start container %s: %w", c.spec.ID, err)
	}
	c.mu.Lock()
	if c.status.State != StateCreated || c.cancel != nil {
		st := c.status.State
		c.mu.Unlock()
		stdin.close()
		return fmt.Errorf("start container %s: %w: it is %s", c.spec.ID, ErrState, st)
	}
	if !c.r.track(c) {
		c.mu.Unlock()
		stdin.close()
		return fmt.Errorf("start container %s: %w", c.spec.ID, ErrClosed)
	}
	// The run context is not the caller's: the container outlives the call.
	runCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.stdin = stdin
	c.status.State = StateRunning
	c.status.StartedAt = time.Now()
	if c.spec.CPUBudget > 0 {
		c.budgetTimer = time.AfterFunc(c.spec.CPUBudget, c.checkBudget)
	}
	c.mu.Unlock()

	started := make(chan error, 1)
	go c.run(runCtx, stdin, started)
	select {
	case err := <-started:
		if err != nil {
			return fmt.Errorf("start container %s: %w", c.spec.ID, err)
		}
		return nil
	case <-ctx.Done():
		c.kill(ReasonError, "start canceled")
		return fmt.Errorf("start container %s: %w", c.spec.ID, ctx.Err())
	}
}

// run runs the guest on an OS thread of its own, so that the thread's CPU
// time is the container's, then releases the thread and the container's
// memory and reports the end through finish.
func (c *Container) run(ctx context.Context, stdin *stopPipe, started chan<- error) {
	goruntime.LockOSThread()
	detach := c.limitCPU()
	clock := currentThreadClock()
	c.mu.Lock()
	c.clock = clock
	c.cpuBase = clock.read()
	c.mu.Unlock()

	signaled := false
	signal := func(err error) {
		signaled = true
		started <- err
	}
	code, reason, msg, startErr := c.runGuest(ctx, stdin, signal)

	c.mem.release()
	c.mu.Lock()
	c.cpuUsed = clock.read() - c.cpuBase
	c.clock = 0
	c.mu.Unlock()
	if err := detach(); err != nil {
		// The thread stays locked: it ends with this goroutine instead
		// of serving Go throttled.
		c.log.Error("release the guest thread from its CPU limit", "err", err)
	} else {
		goruntime.UnlockOSThread()
	}

	c.finish(code, reason, msg)
	if !signaled {
		started <- startErr
	}
}

// limitCPU puts the calling (locked) thread under the container's CPU
// quota, if it has one and the node can, and returns what undoes it.
func (c *Container) limitCPU() func() error {
	none := func() error { return nil }
	if c.spec.CPUQuota <= 0 || c.r.cpu == nil {
		return none
	}
	period := c.spec.CPUPeriod
	if period == 0 {
		period = skiffrt.DefaultCPUPeriod
	}
	detach, err := c.r.cpu.attach(c.spec.ID, unix.Gettid(), c.spec.CPUQuota.Microseconds(), period.Microseconds())
	if err != nil {
		c.log.Warn("CPU limit not enforced", "err", err)
		return none
	}
	return detach
}

// runGuest instantiates and runs the module. It owns the instance and
// stdin; it calls started once the instance exists and _start is called,
// and returns how the container ended (and, if it ended before started
// was called, the error for Start).
func (c *Container) runGuest(ctx context.Context, stdin *stopPipe, started func(error)) (code int32, reason, msg string, startErr error) {
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("container goroutine panicked", "panic", p)
			c.mu.Lock()
			c.inst = nil
			c.mu.Unlock()
			stdin.close()
			code, reason, msg = ExitCodeTrap, ReasonError, fmt.Sprintf("runtime panic: %v", p)
			if oom := c.mem.oomMessage(); oom != "" { // a memory the limit cannot hold, at instantiation
				code, reason, msg = ExitCodeStopped, ReasonOOMKilled, oom
			}
			startErr = errors.New(msg)
		}
	}()
	env := c.spec.Env
	if len(c.spec.Ports) > 0 {
		first := int32(3 + len(c.spec.Mounts)) // after stdio and the pre-opened directories
		socks, err := openSockets(&c.spec, first, stdin.r)
		if err != nil {
			stdin.close()
			return ExitCodeStartError, ReasonStartError, err.Error(), err
		}
		defer socks.closeAll()
		c.mu.Lock()
		c.socks = socks
		c.mu.Unlock()
		ctx = context.WithValue(ctx, sockTableKey{}, socks)
		env = append(env[:len(env):len(env)], "SKIFF_LISTEN_FDS="+listenEnv(c.spec.Ports, first))
	}
	cfg := wazero.NewModuleConfig().
		WithName(""). // anonymous: one compiled module, many instances
		WithStartFunctions().
		WithArgs(c.spec.Args...).
		WithSysWalltime().
		WithNanotime(guestNanotime, 1).
		WithNanosleep(func(ns int64) { sleep(ctx, time.Duration(ns)) }).
		WithOsyield(goruntime.Gosched).
		WithRandSource(rand.Reader).
		WithStdin(stdin.r)
	cfg = withMounts(cfg, c.spec.Mounts, len(c.spec.Ports))
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		cfg = cfg.WithEnv(k, v)
	}
	if c.spec.Stdout != nil {
		cfg = cfg.WithStdout(c.spec.Stdout)
	}
	if c.spec.Stderr != nil {
		cfg = cfg.WithStderr(c.spec.Stderr)
	}

	inst, err := c.r.rt.InstantiateModule(experimental.WithMemoryAllocator(ctx, c.mem), c.mod, cfg)
	if err != nil {
		stdin.close()
		var exit *sys.ExitError
		if errors.As(err, &exit) || ctx.Err() != nil { // the Wasm start section exited, or Stop came first
			code, reason, msg = c.classify(err)
			return code, reason, msg, nil
		}
		if oom := c.mem.oomMessage(); oom != "" {
			return ExitCodeStopped, ReasonOOMKilled, oom, errors.New(oom)
		}
		return ExitCodeStartError, ReasonStartError, firstLine(err.Error()), err
	}
	c.mu.Lock()
	c.inst = inst
	c.mu.Unlock()
	started(nil)
	c.log.Debug("container started", "args", c.spec.Args)
	_, err = inst.ExportedFunction("_start").Call(ctx)
	c.mu.Lock()
	c.inst = nil
	c.mu.Unlock()
	inst.Close(context.Background())
	stdin.close()
	if err != nil {
		c.log.Debug("container _start returned an error", "err", err)
	}
	code, reason, msg = c.classify(err)
	return code, reason, msg, nil
}

// classify turns the end of _start into an exit code, reason and message.
// A kill asked before _start ended wins over whatever the instance did
// after it: a guest woken by the end of stdin may have got as far as
// returning before wazero closed it.
func (c *Container) classify(err error) (int32, string, string) {
	c.mu.Lock()
	stopReason, stopMsg := c.stopReason, c.stopMsg
	c.mu.Unlock()
	var exit *sys.ExitError
	code, reason, msg := int32(0), ReasonCompleted, ""
	switch {
	case stopMsg != "":
		return ExitCodeStopped, stopReason, stopMsg
	case err == nil:
	case errors.As(err, &exit):
		switch ec := exit.ExitCode(); ec {
		case 0:
		case sys.ExitCodeContextCanceled, sys.ExitCodeDeadlineExceeded:
			code, reason, msg = ExitCodeStopped, ReasonError, "stopped"
		default:
			code, reason = int32(ec), ReasonError
		}
	default:
		code, reason, msg = ExitCodeTrap, ReasonError, firstLine(err.Error())
	}
	if oom := c.mem.oomMessage(); oom != "" && code != 0 {
		return ExitCodeStopped, ReasonOOMKilled, oom
	}
	return code, reason, msg
}

func (c *Container) finish(code int32, reason, msg string) {
	c.mu.Lock()
	if c.status.State == StateExited {
		c.mu.Unlock()
		return
	}
	c.status.State = StateExited
	c.status.ExitCode = code
	c.status.Reason = reason
	c.status.Message = msg
	c.status.FinishedAt = time.Now()
	cancel := c.cancel
	if c.killTimer != nil {
		c.killTimer.Stop()
	}
	if c.budgetTimer != nil {
		c.budgetTimer.Stop()
	}
	e := c.entry
	c.entry, c.mod = nil, nil
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	c.r.untrack(c)
	if e != nil {
		c.r.unpin(e)
	}
	close(c.done)
	c.log.Debug("container exited", "exit_code", code, "reason", reason, "message", msg)
}

// Stop stops the container, gracefully when grace > 0: it asks the module
// to stop by making its stdin reach end of file, and waits up to grace for
// _start to return; the module's own exit code and reason then stand
// ("Completed" for 0, "Error" otherwise). A module still running when grace
// ends is killed, with message "stopped: did not exit within the <grace>
// grace period". With grace <= 0 it is killed at once, message "stopped".
// A kill closes the instance at its next function call or loop iteration,
// or when it wakes from a sleep or a read of stdin: exit code 137, reason
// "Error". Until the kill, the module's sleeps run their course, so a
// module sleeping on one goroutine while it reads stdin on another sees the
// request.
//
// Stop waits until the container has exited or ctx ends. The kill at the
// end of grace belongs to the container, not to the call: a caller that
// gives up does not cancel it. A later Stop with a shorter grace brings the
// kill forward; a longer one does not postpone it. Stopping a container
// that was never started moves it to Exited at once. Stop is idempotent.
func (c *Container) Stop(ctx context.Context, grace time.Duration) error {
	return c.stop(ctx, grace, "stopped")
}

// stop asks for a graceful stop of grace, or kills with msg if grace <= 0.
func (c *Container) stop(ctx context.Context, grace time.Duration, msg string) error {
	c.mu.Lock()
	switch {
	case c.status.State == StateExited:
		c.mu.Unlock()
		return nil
	case c.cancel == nil: // never started
		c.status = Status{State: StateExited, ExitCode: ExitCodeStopped, Reason: ReasonError, Message: msg, FinishedAt: time.Now()}
		e := c.entry
		c.entry, c.mod = nil, nil
		c.mu.Unlock()
		if e != nil {
			c.r.unpin(e)
		}
		close(c.done)
		return nil
	}
	graceful := grace > 0
	if graceful {
		c.armKill(grace)
	}
	stdin := c.stdin
	c.mu.Unlock()
	if graceful {
		stdin.signal()
	} else {
		c.kill(ReasonError, msg)
	}
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop container %s: %w", c.spec.ID, ctx.Err())
	}
}

// armKill makes sure the container is killed within grace from now. c.mu
// must be held.
func (c *Container) armKill(grace time.Duration) {
	at := time.Now().Add(grace)
	if c.killTimer != nil {
		if !at.Before(c.killAt) {
			return
		}
		c.killTimer.Stop()
	}
	msg := fmt.Sprintf("stopped: did not exit within the %v grace period", grace)
	c.killAt = at
	c.killTimer = time.AfterFunc(grace, func() { c.kill(ReasonError, msg) })
}

// kill cancels the run context, which closes the instance, then wakes a
// guest blocked on stdin so that it meets the closed instance. The first
// kill's reason and message stand.
func (c *Container) kill(reason, msg string) {
	c.mu.Lock()
	if c.status.State == StateExited || c.cancel == nil {
		c.mu.Unlock()
		return
	}
	if c.stopMsg == "" {
		c.stopReason, c.stopMsg = reason, msg
	}
	cancel, stdin, socks := c.cancel, c.stdin, c.socks
	c.mu.Unlock()
	cancel()
	c.awaitClosed()
	stdin.signal()
	if socks != nil {
		socks.wake() // a guest waiting on its sockets
	}
}

// Bounds of awaitClosed.
const (
	closeWait = 100 * time.Millisecond
	closePoll = 20 * time.Microsecond
)

// awaitClosed waits, for closeWait at most, until wazero has closed the
// instance after its run context was canceled. WithCloseOnContextDone does
// that on a goroutine of its own and tells no one, hence the polling; it
// takes microseconds. Without the wait, a guest woken by the end of stdin
// could run on (print, return from _start) before it is closed.
func (c *Container) awaitClosed() {
	for deadline := time.Now().Add(closeWait); time.Now().Before(deadline); time.Sleep(closePoll) {
		c.mu.Lock()
		inst := c.inst
		c.mu.Unlock()
		if inst == nil || inst.IsClosed() {
			return
		}
	}
}

// minBudgetCheck is the shortest wait between two checks of a CPU budget.
const minBudgetCheck = 10 * time.Millisecond

// checkBudget kills the container if it has used up its CPU budget, or
// checks again when it could have at the earliest: the guest runs on one
// thread, so it cannot use more CPU time than the wall time that passes.
func (c *Container) checkBudget() {
	used := c.Stats().CPUTime
	if used >= c.spec.CPUBudget {
		c.kill(ReasonCPUBudgetExceeded, fmt.Sprintf("CPU budget of %v used up (%v of CPU time)", c.spec.CPUBudget, used.Round(time.Millisecond)))
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.status.State == StateRunning {
		c.budgetTimer.Reset(max(c.spec.CPUBudget-used, minBudgetCheck))
	}
}

// Stats returns the container's resource use now.
func (c *Container) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Stats{Timestamp: time.Now(), CPUTime: c.cpuUsed}
	if c.clock != 0 { // the guest thread is locked until clock is cleared, under mu
		st.CPUTime = c.clock.read() - c.cpuBase
		st.MemoryBytes = c.mem.used.Load()
	}
	return st
}

// Done is closed when the container has exited.
func (c *Container) Done() <-chan struct{} { return c.done }

// Status returns a snapshot of the container's state.
func (c *Container) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// sleep sleeps for d or until ctx ends, so that a kill interrupts a guest
// blocked in poll_oneoff on a clock. (A poll_oneoff that also waits for
// stdin does not come here: wazero polls the stdin pipe with the clock's
// timeout, and a kill closes the pipe's write end.) When ctx has ended it exits the module the way
// proc_exit does (a panic with a sys.ExitError, which wazero turns into the
// error of the call), so the guest runs no further code after a Stop.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		panic(sys.NewExitError(sys.ExitCodeContextCanceled))
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// Remove releases nothing more than Stop did: a module's instance holds
// nothing on the node once it has exited. It fails with ErrState while
// the container runs.
func (c *Container) Remove(ctx context.Context) error {
	if c.Status().State == StateRunning {
		return fmt.Errorf("remove container %s: %w: it is running", c.spec.ID, ErrState)
	}
	return nil
}
