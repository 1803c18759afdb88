package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// maxRuncOutput bounds what is kept of a runc call's output.
const maxRuncOutput = 64 << 10

// runcError is a failed runc call: its arguments and what it said.
type runcError struct {
	args []string
	msg  string
	err  error
}

func (e *runcError) Error() string {
	if e.msg != "" {
		return fmt.Sprintf("runc %s: %s", e.args[0], e.msg)
	}
	return fmt.Sprintf("runc %s: %v", e.args[0], e.err)
}

func (e *runcError) Unwrap() error { return e.err }

// notExist says whether err is runc's "container does not exist".
func notExist(err error) bool {
	var re *runcError
	return errors.As(err, &re) && strings.Contains(re.msg, "does not exist")
}

// command is a runc call with the runtime's global flags, bounded by the
// call deadline (cancel releases it).
func (r *Runtime) command(ctx context.Context, args ...string) (*exec.Cmd, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, r.callTimeout)
	cmd := exec.CommandContext(ctx, r.runc, append([]string{"--root", r.runcRoot}, args...)...)
	cmd.WaitDelay = time.Second
	return cmd, cancel
}

// call runs runc with args and returns its standard output.
func (r *Runtime) call(ctx context.Context, args ...string) ([]byte, error) {
	cmd, cancel := r.command(ctx, args...)
	defer cancel()
	var stdout, stderr boundedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, &runcError{args: args, msg: runcMessage(stderr.Bytes()), err: err}
	}
	return stdout.Bytes(), nil
}

// runcMessage is the gist of runc's complaint: its last line, without
// logrus's decoration.
func runcMessage(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	if _, msg, ok := strings.Cut(last, "msg=\""); ok {
		last = strings.TrimSuffix(msg, "\"")
	}
	return last
}

// logMessage is the last error of a runc JSON log file.
func logMessage(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	msg := ""
	for _, line := range bytes.Split(data, []byte("\n")) {
		var e struct{ Level, Msg string }
		if json.Unmarshal(line, &e) == nil && e.Level == "error" {
			msg = e.Msg
		}
	}
	return msg
}

// runcState is what `runc state` says of a container.
type runcState struct {
	Status string `json:"status"` // created, running, paused, stopped
	Pid    int    `json:"pid"`
	Bundle string `json:"bundle"`
}

func (r *Runtime) state(ctx context.Context, id string) (runcState, error) {
	out, err := r.call(ctx, "state", id)
	if err != nil {
		return runcState{}, err
	}
	var st runcState
	if err := json.Unmarshal(out, &st); err != nil {
		return runcState{}, fmt.Errorf("runc state: %w", err)
	}
	return st, nil
}

// boundedBuffer keeps the first maxRuncOutput bytes written to it.
type boundedBuffer struct{ bytes.Buffer }

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := maxRuncOutput - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
