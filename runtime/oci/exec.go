package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	skiffrt "skiff.dev/skiff/runtime"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Exec runs p in the container with `runc exec`, as the container's user,
// with its capabilities and security settings, and returns its exit code
// (128+n for a process killed by signal n) once it has exited and its
// output is copied. Ending ctx kills the process. With p.TTY the process
// gets a terminal of its own (see execTTY).
func (c *Container) Exec(ctx context.Context, p skiffrt.Process) (int32, error) {
	if len(p.Args) == 0 || p.Args[0] == "" {
		return 0, fmt.Errorf("exec in container %s: %w: args: empty", c.id, skiffrt.ErrInvalidSpec)
	}
	for i, kv := range p.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return 0, fmt.Errorf("exec in container %s: %w: env[%d] %q: want KEY=VALUE", c.id, skiffrt.ErrInvalidSpec, i, kv)
		}
	}
	c.mu.Lock()
	state, detached := c.status.State, c.detached
	proc := c.proc
	c.mu.Unlock()
	if detached {
		return 0, fmt.Errorf("exec in container %s: %w", c.id, skiffrt.ErrClosed)
	}
	if state != skiffrt.StateRunning {
		return 0, fmt.Errorf("exec in container %s: %w: it is %s", c.id, skiffrt.ErrState, state)
	}
	proc.Args = p.Args
	proc.Env = append(append([]string(nil), proc.Env...), p.Env...)
	proc.Terminal = p.TTY
	proc.OOMScoreAdj = nil // the container's

	dir, err := os.MkdirTemp(c.bundle, "exec-")
	if err != nil {
		return 0, fmt.Errorf("exec in container %s: %w", c.id, err)
	}
	defer os.RemoveAll(dir)
	if p.TTY {
		code, err := c.execTTY(ctx, p, proc, dir)
		if err != nil {
			return 0, fmt.Errorf("exec in container %s: %w", c.id, err)
		}
		return code, nil
	}
	procPath, pidPath, logPath := filepath.Join(dir, "process.json"), filepath.Join(dir, "pid"), filepath.Join(dir, "runc.log")
	if err := writeProcess(procPath, proc); err != nil {
		return 0, fmt.Errorf("exec in container %s: %w", c.id, err)
	}

	// No call deadline: the process runs as long as it does; ctx ends it.
	cmd := exec.Command(c.r.runc, "--root", c.r.runcRoot, "--log", logPath, "--log-format", "json",
		"exec", "--process", procPath, "--pid-file", pidPath, c.id)
	cmd.Stdout, cmd.Stderr = p.Stdout, p.Stderr
	cmd.WaitDelay = time.Second
	// Stdin goes through a pipe of our own, not os/exec's copy, which
	// Wait would wait for: a command that exits while its client still
	// holds stdin open must end the call (the copy ends at its next read
	// or write, once the caller closes p.Stdin or the pipe is closed).
	var stdinW *os.File
	if p.Stdin != nil {
		r, w, err := os.Pipe()
		if err != nil {
			return 0, fmt.Errorf("exec in container %s: %w", c.id, err)
		}
		cmd.Stdin, stdinW = r, w
		defer w.Close()
		defer r.Close()
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("exec in container %s: %w", c.id, err)
	}
	if stdinW != nil {
		cmd.Stdin.(*os.File).Close() // the child has it
		go func() {
			io.Copy(stdinW, p.Stdin)
			stdinW.Close() // end of input: the command sees EOF
		}()
	}
	exited := make(chan struct{})
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		select {
		case <-exited:
		case <-ctx.Done():
			killExec(cmd, pidPath)
		}
	}()
	err = cmd.Wait()
	close(exited)
	<-killed
	if msg := logMessage(logPath); msg != "" {
		return 0, fmt.Errorf("exec in container %s: runc exec: %s", c.id, msg)
	}
	if ctx.Err() != nil {
		return 0, fmt.Errorf("exec in container %s: %w", c.id, ctx.Err())
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &exitErr) && exitErr.ExitCode() >= 0:
		return int32(exitErr.ExitCode()), nil
	}
	return 0, fmt.Errorf("exec in container %s: %w", c.id, err)
}

// writeProcess writes proc where `runc exec --process` reads it.
func writeProcess(path string, proc specs.Process) error {
	b, err := json.Marshal(proc)
	if err != nil {
		return fmt.Errorf("write process.json: %w", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write process.json: %w", err)
	}
	return nil
}

// killExec kills an exec'd process (its pid once runc has written it, else
// runc itself, before the process exists).
func killExec(cmd *exec.Cmd, pidPath string) {
	if p, err := openPidFile(pidPath); err == nil {
		p.signal(unix.SIGKILL)
		p.close()
		return
	}
	cmd.Process.Kill()
}
