package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// logService serves container logs from the node's log directory, where the
// CRI server writes them in the CRI log format.
type logService struct{ logDir string }

// ContainerLogs returns the output of the container's latest run.
func (s *logService) ContainerLogs(_ context.Context, req *connect.Request[skiffv1.ContainerLogsRequest]) (*connect.Response[skiffv1.ContainerLogsResponse], error) {
	m := req.Msg
	if m.GetPod() == "" || m.GetContainer() == "" || m.GetPodUid() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("pod, podUid and container are required"))
	}
	dir := filepath.Join(s.logDir, podLogDirName(m.GetNamespace(), m.GetPod(), m.GetPodUid()), m.GetContainer())
	if strings.Contains(m.GetContainer(), "/") || !strings.HasPrefix(dir, filepath.Clean(s.logDir)+string(filepath.Separator)) {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("invalid container name %q", m.GetContainer()))
	}
	path, err := latestLog(dir)
	if err != nil {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("container %q of pod %q has no logs on this node yet", m.GetContainer(), m.GetPod()))
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("read log %s: %w", path, err))
	}
	data, err := parseCRILog(raw)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("parse log %s: %w", path, err))
	}
	return connect.NewResponse(&skiffv1.ContainerLogsResponse{Data: data}), nil
}

// latestLog returns the log file of the highest attempt, <attempt>.log.
func latestLog(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	best, bestN := "", -1
	for _, e := range entries {
		n, err := strconv.Atoi(strings.TrimSuffix(e.Name(), ".log"))
		if err != nil || !strings.HasSuffix(e.Name(), ".log") {
			continue
		}
		if n > bestN {
			best, bestN = filepath.Join(dir, e.Name()), n
		}
	}
	if best == "" {
		return "", fs.ErrNotExist
	}
	return best, nil
}

// parseCRILog turns CRI log lines ("<time> <stream> <P|F> <content>") back
// into the bytes the container wrote: partial (P) chunks are joined and a
// full (F) one ends the line.
func parseCRILog(raw []byte) ([]byte, error) {
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		parts := bytes.SplitN(line, []byte(" "), 4)
		if len(parts) < 3 {
			return nil, fmt.Errorf("line %d: not in the CRI log format", n)
		}
		content := []byte{}
		if len(parts) == 4 {
			content = parts[3]
		}
		out.Write(content)
		switch string(parts[2]) {
		case "F":
			out.WriteByte('\n')
		case "P":
		default:
			return nil, fmt.Errorf("line %d: unknown tag %q", n, parts[2])
		}
	}
	return out.Bytes(), sc.Err()
}

// StreamContainerLogs streams a container's log.
func (s *logService) StreamContainerLogs(context.Context, *connect.Request[skiffv1.ContainerLogsRequest], *connect.ServerStream[skiffv1.LogChunk]) error {
	return connect.NewError(connect.CodeUnimplemented, errors.New("streaming logs: not implemented yet"))
}
