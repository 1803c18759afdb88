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

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

// Exit codes the runtime reports for ends that are not the module's own choice.
const (
	ExitCodeTrap       int32 = 134 // 128 + SIGABRT
	ExitCodeStopped    int32 = 137 // 128 + SIGKILL
	ExitCodeStartError int32 = 128
)

// Reasons, as Kubernetes reports them for container terminations.
const (
	ReasonCompleted  = "Completed"
	ReasonError      = "Error"
	ReasonStartError = "StartError"
)

// State is a container's lifecycle state.
type State int

// States, in lifecycle order. A container moves Created -> Running -> Exited,
// or Created -> Exited when stopped before it was started.
const (
	StateCreated State = iota
	StateRunning
	StateExited
)

func (s State) String() string {
	switch s {
	case StateCreated:
		return "created"
	case StateRunning:
		return "running"
	case StateExited:
		return "exited"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Status is a snapshot of a container's state.
type Status struct {
	State      State
	ExitCode   int32
	Reason     string
	Message    string
	StartedAt  time.Time
	FinishedAt time.Time
}

// Container is one module instance and its lifecycle. Its methods are safe
// for concurrent use.
type Container struct {
	r    *Runtime
	spec ContainerSpec
	mod  wazero.CompiledModule
	log  *slog.Logger
	done chan struct{}

	mu        sync.Mutex
	status    Status
	cancel    context.CancelFunc // set by Start; cancels the run context: the kill
	stdin     *stopPipe          // set by Start; its end of file asks the module to stop
	inst      api.Module         // the instance while _start runs
	stopMsg   string             // why the container was killed, once killed
	killAt    time.Time          // when a graceful stop turns into a kill, once one is asked
	killTimer *time.Timer        // fires at killAt
}

func newContainer(r *Runtime, spec ContainerSpec, mod wazero.CompiledModule) *Container {
	return &Container{
		r:    r,
		spec: spec,
		mod:  mod,
		log:  r.log.With("container", spec.ID),
		done: make(chan struct{}),
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
		c.kill("start canceled")
		return fmt.Errorf("start container %s: %w", c.spec.ID, ctx.Err())
	}
}

// run instantiates and runs the module. It owns the instance and stdin; it
// reports instantiation on started and the end through finish.
func (c *Container) run(ctx context.Context, stdin *stopPipe, started chan<- error) {
	signaled := false
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("container goroutine panicked", "panic", p)
			c.mu.Lock()
			c.inst = nil
			c.mu.Unlock()
			stdin.close()
			c.finish(ExitCodeTrap, ReasonError, fmt.Sprintf("runtime panic: %v", p))
			if !signaled {
				started <- fmt.Errorf("runtime panic: %v", p)
			}
		}
	}()
	cfg := wazero.NewModuleConfig().
		WithName(""). // anonymous: one compiled module, many instances
		WithStartFunctions().
		WithArgs(c.spec.Args...).
		WithSysWalltime().
		WithSysNanotime().
		WithNanosleep(func(ns int64) { sleep(ctx, time.Duration(ns)) }).
		WithOsyield(goruntime.Gosched).
		WithRandSource(rand.Reader).
		WithStdin(stdin.r)
	cfg = withMounts(cfg, c.spec.Mounts)
	for _, kv := range c.spec.Env {
		k, v, _ := strings.Cut(kv, "=")
		cfg = cfg.WithEnv(k, v)
	}
	if c.spec.Stdout != nil {
		cfg = cfg.WithStdout(c.spec.Stdout)
	}
	if c.spec.Stderr != nil {
		cfg = cfg.WithStderr(c.spec.Stderr)
	}

	inst, err := c.r.rt.InstantiateModule(ctx, c.mod, cfg)
	if err != nil {
		stdin.close()
		var exit *sys.ExitError
		if errors.As(err, &exit) || ctx.Err() != nil { // the Wasm start section exited, or Stop came first
			c.finish(c.classify(err))
			signaled = true
			started <- nil
			return
		}
		c.finish(ExitCodeStartError, ReasonStartError, firstLine(err.Error()))
		signaled = true
		started <- err
		return
	}
	c.mu.Lock()
	c.inst = inst
	c.mu.Unlock()
	signaled = true
	started <- nil
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
	c.finish(c.classify(err))
}

// classify turns the end of _start into an exit code, reason and message.
// A kill asked before _start ended wins over whatever the instance did
// after it: a guest woken by the end of stdin may have got as far as
// returning before wazero closed it.
func (c *Container) classify(err error) (int32, string, string) {
	c.mu.Lock()
	stopMsg := c.stopMsg
	c.mu.Unlock()
	var exit *sys.ExitError
	switch {
	case stopMsg != "":
		return ExitCodeStopped, ReasonError, stopMsg
	case err == nil:
		return 0, ReasonCompleted, ""
	case errors.As(err, &exit):
		switch code := exit.ExitCode(); code {
		case 0:
			return 0, ReasonCompleted, ""
		case sys.ExitCodeContextCanceled, sys.ExitCodeDeadlineExceeded:
			return ExitCodeStopped, ReasonError, "stopped"
		default:
			return int32(code), ReasonError, ""
		}
	default:
		return ExitCodeTrap, ReasonError, firstLine(err.Error())
	}
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
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	c.r.untrack(c)
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
		c.mu.Unlock()
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
		c.kill(msg)
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
	c.killTimer = time.AfterFunc(grace, func() { c.kill(msg) })
}

// kill cancels the run context, which closes the instance, then wakes a
// guest blocked on stdin so that it meets the closed instance.
func (c *Container) kill(msg string) {
	c.mu.Lock()
	if c.status.State == StateExited || c.cancel == nil {
		c.mu.Unlock()
		return
	}
	if c.stopMsg == "" {
		c.stopMsg = msg
	}
	cancel, stdin := c.cancel, c.stdin
	c.mu.Unlock()
	cancel()
	c.awaitClosed()
	stdin.signal()
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
