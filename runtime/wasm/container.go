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

	mu      sync.Mutex
	status  Status
	cancel  context.CancelFunc // set by Start; cancels the run context
	stopMsg string             // why Stop was asked, once asked
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
// "StartError"). Start may be called once.
func (c *Container) Start(ctx context.Context) error {
	c.mu.Lock()
	if c.status.State != StateCreated || c.cancel != nil {
		st := c.status.State
		c.mu.Unlock()
		return fmt.Errorf("start container %s: %w: it is %s", c.spec.ID, ErrState, st)
	}
	if !c.r.track(c) {
		c.mu.Unlock()
		return fmt.Errorf("start container %s: %w", c.spec.ID, ErrClosed)
	}
	// The run context is not the caller's: the container outlives the call.
	runCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.status.State = StateRunning
	c.status.StartedAt = time.Now()
	c.mu.Unlock()

	started := make(chan error, 1)
	go c.run(runCtx, started)
	select {
	case err := <-started:
		if err != nil {
			return fmt.Errorf("start container %s: %w", c.spec.ID, err)
		}
		return nil
	case <-ctx.Done():
		c.requestStop("start canceled")
		return fmt.Errorf("start container %s: %w", c.spec.ID, ctx.Err())
	}
}

// run instantiates and runs the module. It owns the instance; it reports
// instantiation on started and the end through finish.
func (c *Container) run(ctx context.Context, started chan<- error) {
	signaled := false
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("container goroutine panicked", "panic", p)
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
		WithRandSource(rand.Reader)
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
		var exit *sys.ExitError
		if errors.As(err, &exit) || ctx.Err() != nil { // the Wasm start section exited, or Stop came first
			c.finish(c.classify(ctx, err))
			signaled = true
			started <- nil
			return
		}
		c.finish(ExitCodeStartError, ReasonStartError, firstLine(err.Error()))
		signaled = true
		started <- err
		return
	}
	signaled = true
	started <- nil
	c.log.Debug("container started", "args", c.spec.Args)
	_, err = inst.ExportedFunction("_start").Call(ctx)
	inst.Close(context.Background())
	if err != nil {
		c.log.Debug("container _start returned an error", "err", err)
	}
	c.finish(c.classify(ctx, err))
}

// classify turns the end of _start into an exit code, reason and message.
func (c *Container) classify(ctx context.Context, err error) (int32, string, string) {
	c.mu.Lock()
	stopMsg := c.stopMsg
	c.mu.Unlock()
	var exit *sys.ExitError
	switch {
	case err == nil:
		return 0, ReasonCompleted, ""
	case errors.As(err, &exit):
		switch code := exit.ExitCode(); code {
		case 0:
			return 0, ReasonCompleted, ""
		case sys.ExitCodeContextCanceled, sys.ExitCodeDeadlineExceeded:
			if stopMsg == "" {
				stopMsg = "stopped"
			}
			return ExitCodeStopped, ReasonError, stopMsg
		default:
			return int32(code), ReasonError, ""
		}
	case stopMsg != "" && ctx.Err() != nil:
		return ExitCodeStopped, ReasonError, stopMsg
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
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	c.r.untrack(c)
	close(c.done)
	c.log.Debug("container exited", "exit_code", code, "reason", reason, "message", msg)
}

// Stop kills the container: the instance is closed at its next function call
// or loop iteration, or when it wakes from a sleep. It waits until the
// container has exited or ctx ends. Stopping a container that was never
// started moves it to Exited. Stop is idempotent.
func (c *Container) Stop(ctx context.Context) error { return c.stop(ctx, "stopped") }

func (c *Container) stop(ctx context.Context, msg string) error {
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
	c.mu.Unlock()
	c.requestStop(msg)
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop container %s: %w", c.spec.ID, ctx.Err())
	}
}

func (c *Container) requestStop(msg string) {
	c.mu.Lock()
	if c.stopMsg == "" {
		c.stopMsg = msg
	}
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
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

// sleep sleeps for d or until ctx ends, so that Stop interrupts a guest
// blocked in poll_oneoff. When ctx has ended it exits the module the way
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
