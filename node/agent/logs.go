package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

// Bounds of the log service.
const (
	// maxUnaryLogBytes bounds what ContainerLogs returns; more must be
	// streamed.
	maxUnaryLogBytes = 4 << 20
	// maxLogStreams bounds the log reads served at once.
	maxLogStreams = 64
	// criCallTimeout bounds the CRI call that asks whether a container runs.
	criCallTimeout = 5 * time.Second
)

// logService serves container logs from the node's log directory, where the
// CRI server writes them in the CRI log format (see logread.go for the
// files of a run), reading them in bounded chunks, never whole.
type logService struct {
	logDir string
	log    *slog.Logger
	// running says whether the run attempt of the container name of pod
	// uid still runs (or is about to); a follower ends when it does not.
	running func(ctx context.Context, uid, name string, attempt uint32) bool
	seats   chan struct{} // one per read in progress
}

func newLogService(logDir string, rt runtimeapi.RuntimeServiceClient, log *slog.Logger) *logService {
	return &logService{logDir: logDir, log: log, running: criRunning(rt, log), seats: make(chan struct{}, maxLogStreams)}
}

// agentService is the AgentService: container logs and pod stats.
type agentService struct {
	*logService
	*statsService
}

// handler serves the AgentService. A stream may outlive the server's write
// timeout, which bounds unary calls: it is lifted for streams.
func (s agentService) handler() (string, http.Handler) {
	path, h := skiffv1connect.NewAgentServiceHandler(s)
	return path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == skiffv1connect.AgentServiceStreamContainerLogsProcedure {
			_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
		}
		h.ServeHTTP(w, r)
	})
}

// criRunning asks the CRI server whether a container's run is still
// created or running. When it cannot tell, it says yes: a follower keeps
// following rather than end early.
func criRunning(rt runtimeapi.RuntimeServiceClient, log *slog.Logger) func(context.Context, string, string, uint32) bool {
	return func(ctx context.Context, uid, name string, attempt uint32) bool {
		if rt == nil {
			return false
		}
		ctx, cancel := context.WithTimeout(ctx, criCallTimeout)
		defer cancel()
		res, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
			LabelSelector: map[string]string{LabelPodUID: uid, LabelContainerName: name},
		}})
		if err != nil {
			log.Warn("ask whether a container runs, for its log", "container", name, "err", err)
			return true
		}
		for _, c := range res.GetContainers() {
			if c.GetMetadata().GetAttempt() == attempt {
				st := c.GetState()
				return st == runtimeapi.ContainerState_CONTAINER_RUNNING || st == runtimeapi.ContainerState_CONTAINER_CREATED
			}
		}
		return false
	}
}

// open validates a request and finds the live file of the run it names.
func (s *logService) open(m *skiffv1.ContainerLogsRequest) (path string, attempt uint32, opts logOptions, err error) {
	if m.GetPod() == "" || m.GetContainer() == "" || m.GetPodUid() == "" {
		return "", 0, opts, connect.NewError(connect.CodeInvalidArgument, errors.New("pod, podUid and container are required"))
	}
	opts, err = optionsOf(m, time.Now())
	if err != nil {
		return "", 0, opts, connect.NewError(connect.CodeInvalidArgument, err)
	}
	dir := filepath.Join(s.logDir, podLogDirName(m.GetNamespace(), m.GetPod(), m.GetPodUid()), m.GetContainer())
	if strings.Contains(m.GetContainer(), "/") || !strings.HasPrefix(dir, filepath.Clean(s.logDir)+string(filepath.Separator)) {
		return "", 0, opts, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("invalid container name %q", m.GetContainer()))
	}
	runs, err := logRuns(dir)
	if err != nil || len(runs) == 0 {
		return "", 0, opts, connect.NewError(connect.CodeNotFound, fmt.Errorf("container %q of pod %q has no logs on this node yet", m.GetContainer(), m.GetPod()))
	}
	i := len(runs) - 1
	if m.GetPrevious() {
		if i == 0 {
			return "", 0, opts, connect.NewError(connect.CodeNotFound, fmt.Errorf("container %q of pod %q has no previous run on this node", m.GetContainer(), m.GetPod()))
		}
		i--
	}
	return filepath.Join(dir, fmt.Sprintf("%d.log", runs[i])), runs[i], opts, nil
}

// optionsOf checks a request's options, naming the field at fault.
func optionsOf(m *skiffv1.ContainerLogsRequest, now time.Time) (logOptions, error) {
	o := logOptions{follow: m.GetFollow(), timestamps: m.GetTimestamps(), tail: -1, limit: -1}
	if m.TailLines != nil {
		if o.tail = m.GetTailLines(); o.tail < 0 {
			return o, fmt.Errorf("tailLines: must not be negative, got %d", o.tail)
		}
	}
	if m.SinceSeconds != nil {
		s := m.GetSinceSeconds()
		if s <= 0 {
			return o, fmt.Errorf("sinceSeconds: must be positive, got %d", s)
		}
		o.since = now.Add(-time.Duration(min(s, 1<<32)) * time.Second)
	}
	if m.LimitBytes != nil {
		if o.limit = m.GetLimitBytes(); o.limit <= 0 {
			return o, fmt.Errorf("limitBytes: must be positive, got %d", o.limit)
		}
	}
	return o, nil
}

// logRuns returns the attempts that have a log in dir (<attempt>.log), in
// increasing order.
func logRuns(dir string) ([]uint32, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var runs []uint32
	for _, e := range entries {
		s, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(s, 10, 32); err == nil {
			runs = append(runs, uint32(n))
		}
	}
	if len(runs) == 0 {
		return nil, fs.ErrNotExist
	}
	slices.Sort(runs)
	return runs, nil
}

// pruneRuns removes from dir the logs of the runs before keep (their
// <attempt>.log and its rotated files), so that a container that restarts
// keeps the logs of its current and previous runs only, as the kubelet
// keeps one dead container: a crash loop does not fill the disk.
func pruneRuns(dir string, keep uint32) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		attempt, rest, ok := strings.Cut(e.Name(), ".log")
		if !ok || (rest != "" && !strings.HasPrefix(rest, ".")) {
			continue
		}
		if n, err := strconv.ParseUint(attempt, 10, 32); err == nil && uint32(n) < keep {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// take takes a seat for a read, or says why not.
func (s *logService) take() (func(), error) {
	select {
	case s.seats <- struct{}{}:
		return func() { <-s.seats }, nil
	default:
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("this node serves %d log reads at once already; try again later", cap(s.seats)))
	}
}

// ContainerLogs returns the output of the container's run (the latest, or
// the previous), at most maxUnaryLogBytes of it: a larger log is refused
// with a pointer to StreamContainerLogs. It does not follow.
func (s *logService) ContainerLogs(ctx context.Context, req *connect.Request[skiffv1.ContainerLogsRequest]) (*connect.Response[skiffv1.ContainerLogsResponse], error) {
	path, _, opts, err := s.open(req.Msg)
	if err != nil {
		return nil, err
	}
	if opts.follow {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("follow: only StreamContainerLogs follows a log"))
	}
	release, err := s.take()
	if err != nil {
		return nil, err
	}
	defer release()
	limited := opts.limit >= 0 && opts.limit <= maxUnaryLogBytes
	if !limited {
		opts.limit = maxUnaryLogBytes + 1
	}
	var out bytes.Buffer
	err = readLog(ctx, path, opts, nil, func(b []byte) error {
		out.Write(b)
		return nil
	})
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	if !limited && out.Len() > maxUnaryLogBytes {
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("the log of container %q is larger than %d MiB: stream it (skiff logs; StreamLogs) or ask for less (tail lines, limit bytes)", req.Msg.GetContainer(), maxUnaryLogBytes>>20))
	}
	return connect.NewResponse(&skiffv1.ContainerLogsResponse{Data: out.Bytes()}), nil
}

// StreamContainerLogs streams a container's log in chunks of about 32 KiB
// as it reads them: the run's rotated files first, then the live one; with
// follow, what the container writes next, across rotations, until the
// container has exited and all is sent, or the caller goes away.
func (s *logService) StreamContainerLogs(ctx context.Context, req *connect.Request[skiffv1.ContainerLogsRequest], st *connect.ServerStream[skiffv1.LogChunk]) error {
	m := req.Msg
	path, attempt, opts, err := s.open(m)
	if err != nil {
		return err
	}
	release, err := s.take()
	if err != nil {
		return err
	}
	defer release()
	running := func(ctx context.Context) bool { return s.running(ctx, m.GetPodUid(), m.GetContainer(), attempt) }
	// An empty chunk first: the caller has the stream's headers at once,
	// even when the log is quiet.
	chunk := &skiffv1.LogChunk{}
	if err := st.Send(chunk); err != nil {
		return err
	}
	err = readLog(ctx, path, opts, running, func(b []byte) error {
		chunk.Data = b
		return st.Send(chunk)
	})
	if err != nil && ctx.Err() == nil {
		s.log.Warn("stream container log", "pod", m.GetNamespace()+"/"+m.GetPod(), "container", m.GetContainer(), "err", err)
		return connect.NewError(connect.CodeInternal, err)
	}
	return ctx.Err()
}
