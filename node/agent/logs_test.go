package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/goleak"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

// testLog writes a run's log as the CRI server does (cri/logs.go): CRI
// entries in <attempt>.log, rotated by size into <attempt>.log.<seq>, the
// oldest deleted past maxFiles.
type testLog struct {
	t        testing.TB
	path     string
	maxSize  int64
	maxFiles int
	mu       sync.Mutex
	f        *os.File
	size     int64
	seq      uint64
}

func newTestLog(t testing.TB, path string, maxSize int64, maxFiles int) *testLog {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	l := &testLog{t: t, path: path, maxSize: maxSize, maxFiles: maxFiles, f: f}
	t.Cleanup(func() { l.f.Close() })
	return l
}

// entry writes one entry at time ts.
func (l *testLog) entry(ts time.Time, tag, content string) {
	l.write([]byte(ts.UTC().Format(time.RFC3339Nano) + " stdout " + tag + " " + content + "\n"))
}

// write writes whole entries.
func (l *testLog) write(b []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.size > 0 && l.size+int64(len(b)) > l.maxSize {
		l.seq++
		if err := os.Rename(l.path, rotatedName(l.path, l.seq)); err != nil {
			l.t.Error(err)
			return
		}
		f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			l.t.Error(err)
			return
		}
		l.f.Close()
		l.f, l.size = f, 0
		if keep := uint64(l.maxFiles - 1); l.seq > keep {
			os.Remove(rotatedName(l.path, l.seq-keep))
		}
	}
	n, err := l.f.Write(b)
	l.size += int64(n)
	if err != nil {
		l.t.Error(err)
	}
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// read runs readLog to its end and returns what it sent.
func read(t *testing.T, path string, o logOptions) string {
	t.Helper()
	var out bytes.Buffer
	err := readLog(context.Background(), path, o, func(context.Context) bool { return false }, func(b []byte) error {
		if len(b) > logChunkSize+logBufSize {
			t.Errorf("a chunk of %d bytes", len(b))
		}
		out.Write(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func all() logOptions { return logOptions{tail: -1, limit: -1} }

// TestReadLogOptions: each option does what it says, over a log rotated
// into several files, with lines split into P entries.
func TestReadLogOptions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c", "0.log")
	l := newTestLog(t, path, 200, 100)
	for i := range 10 {
		ts := t0.Add(time.Duration(i) * time.Minute)
		l.entry(ts, "P", fmt.Sprintf("line %d", i))
		l.entry(ts, "F", " end")
	}
	l.entry(t0.Add(10*time.Minute), "P", "unfinished")
	if seqs, _ := rotatedSeqs(path); len(seqs) < 3 {
		t.Fatalf("the log was rotated into %d files, want at least 3", len(seqs))
	}
	var lines []string
	for i := range 10 {
		lines = append(lines, fmt.Sprintf("line %d end\n", i))
	}
	whole := strings.Join(lines, "") + "unfinished"
	tests := []struct {
		name string
		opts func(*logOptions)
		want string
	}{
		{"all", func(*logOptions) {}, whole},
		{"tail 0", func(o *logOptions) { o.tail = 0 }, ""},
		{"tail 1: the unfinished line", func(o *logOptions) { o.tail = 1 }, "unfinished"},
		{"tail 3", func(o *logOptions) { o.tail = 3 }, lines[8] + lines[9] + "unfinished"},
		{"tail more than there is", func(o *logOptions) { o.tail = 50 }, whole},
		{"since", func(o *logOptions) { o.since = t0.Add(8*time.Minute + time.Second) }, lines[9] + "unfinished"},
		{"since and tail", func(o *logOptions) { o.tail = 5; o.since = t0.Add(8 * time.Minute) }, lines[8] + lines[9] + "unfinished"},
		{"limit", func(o *logOptions) { o.limit = 15 }, whole[:15]},
		{"limit past the end", func(o *logOptions) { o.limit = 1 << 20 }, whole},
		{"timestamps", func(o *logOptions) { o.tail = 2; o.timestamps = true },
			"2026-01-02T03:13:05Z line 9 end\n2026-01-02T03:14:05Z unfinished"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := all()
			tt.opts(&o)
			if got := read(t, path, o); got != tt.want {
				t.Errorf("got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestReadLogTailOracle: whatever the entries and the rotation, tail n
// gives the last n lines of the whole output (a naive model).
func TestReadLogTailOracle(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 20 {
		path := filepath.Join(t.TempDir(), "c", "0.log")
		l := newTestLog(t, path, int64(100+rng.IntN(2000)), 1000)
		var want strings.Builder
		for range rng.IntN(300) {
			tag := "F"
			if rng.IntN(3) == 0 {
				tag = "P"
			}
			content := strings.Repeat(string(rune('a'+rng.IntN(26))), rng.IntN(60))
			l.entry(t0, tag, content)
			want.WriteString(content)
			if tag == "F" {
				want.WriteByte('\n')
			}
		}
		whole := want.String()
		lines := strings.SplitAfter(whole, "\n")
		if lines[len(lines)-1] == "" {
			lines = lines[:len(lines)-1]
		}
		for _, n := range []int{0, 1, 2, 7, 50, 1000} {
			o := all()
			o.tail = int64(n)
			exp := strings.Join(lines[max(0, len(lines)-n):], "")
			if got := read(t, path, o); got != exp {
				t.Fatalf("round %d, tail %d: got %q, want %q", round, n, got, exp)
			}
		}
		if got := read(t, path, all()); got != whole {
			t.Fatalf("round %d: the whole log reads %q, want %q", round, got, whole)
		}
	}
}

// logServer serves a logService over HTTP/2 as the agent does, with
// running controlled by the test.
func logServer(t *testing.T, dir string, running *atomic.Bool) skiffv1connect.AgentServiceClient {
	t.Helper()
	s := newLogService(dir, nil, slog.New(slog.DiscardHandler))
	s.running = func(context.Context, string, string, uint32) bool { return running.Load() }
	mux := http.NewServeMux()
	mux.Handle(agentService{logService: s}.handler())
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return skiffv1connect.NewAgentServiceClient(srv.Client(), srv.URL)
}

func podReq(container string) *skiffv1.ContainerLogsRequest {
	return &skiffv1.ContainerLogsRequest{Namespace: "default", Pod: "p", PodUid: "u1", Container: container}
}

func runLogPath(dir, container string, attempt int) string {
	return filepath.Join(dir, podLogDirName("default", "p", "u1"), container, fmt.Sprintf("%d.log", attempt))
}

// TestStreamFollow: a follower sees the lines written after it started,
// across rotations, and its stream ends once the container has exited and
// all is sent.
func TestStreamFollow(t *testing.T) {
	dir := t.TempDir()
	var running atomic.Bool
	running.Store(true)
	c := logServer(t, dir, &running)
	l := newTestLog(t, runLogPath(dir, "app", 0), 300, 3)
	l.entry(time.Now(), "F", "before")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req := podReq("app")
	req.Follow = true
	st, err := c.StreamContainerLogs(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 100)
	ended := make(chan error, 1)
	go func() {
		for st.Receive() {
			got <- string(st.Msg().GetData())
		}
		ended <- st.Err()
	}()
	var seen strings.Builder
	waitFor := func(s string) {
		t.Helper()
		for !strings.Contains(seen.String(), s) {
			select {
			case chunk := <-got:
				seen.WriteString(chunk)
			case err := <-ended:
				t.Fatalf("stream ended (%v) before %q; got %q", err, s, seen.String())
			case <-ctx.Done():
				t.Fatalf("no %q; got %q", s, seen.String())
			}
		}
	}
	waitFor("before\n")
	for i := range 40 { // rotates several times
		l.entry(time.Now(), "F", fmt.Sprintf("after %02d", i))
		waitFor(fmt.Sprintf("after %02d\n", i))
	}
	l.entry(time.Now(), "F", "last words")
	running.Store(false)
	select {
	case err := <-ended:
		if err != nil {
			t.Fatalf("stream ended with %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the stream did not end once the container exited")
	}
	for len(got) > 0 {
		seen.WriteString(<-got)
	}
	var want strings.Builder
	want.WriteString("before\n")
	for i := range 40 {
		fmt.Fprintf(&want, "after %02d\n", i)
	}
	want.WriteString("last words\n")
	if seen.String() != want.String() {
		t.Errorf("followed %q\nwant %q", seen.String(), want.String())
	}
}

// TestStreamCallerGone: when the caller goes away, the agent's reader
// stops and leaves no goroutine behind.
func TestStreamCallerGone(t *testing.T) {
	dir := t.TempDir()
	var running atomic.Bool
	running.Store(true)
	s := newLogService(dir, nil, slog.New(slog.DiscardHandler))
	s.running = func(context.Context, string, string, uint32) bool { return running.Load() }
	mux := http.NewServeMux()
	mux.Handle(agentService{logService: s}.handler())
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	defer srv.Close()
	c := skiffv1connect.NewAgentServiceClient(srv.Client(), srv.URL)
	l := newTestLog(t, runLogPath(dir, "app", 0), 1<<20, 3)
	l.entry(time.Now(), "F", "hello")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := podReq("app")
	req.Follow = true
	st, err := c.StreamContainerLogs(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for len(got) == 0 && st.Receive() {
		got = st.Msg().GetData()
	}
	if string(got) != "hello\n" {
		t.Fatalf("first chunk: %q, %v", got, st.Err())
	}
	cancel()
	st.Close()
	eventually(t, 5*time.Second, func() bool { return len(s.seats) == 0 },
		func() string { return "the agent still reads the log of a caller that went away" })
	srv.CloseClientConnections()
	srv.Client().CloseIdleConnections()
}

// TestStreamPrevious: previous reads the run before the latest; without
// it the latest; with no earlier run, a clear NotFound.
func TestStreamPrevious(t *testing.T) {
	dir := t.TempDir()
	var running atomic.Bool
	c := logServer(t, dir, &running)
	ctx := context.Background()
	req := podReq("app")
	req.Previous = true
	if _, err := c.ContainerLogs(ctx, connect.NewRequest(podReq("app"))); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("no logs yet: %v, want NotFound", err)
	}
	newTestLog(t, runLogPath(dir, "app", 0), 1<<20, 3).entry(t0, "F", "first run")
	_, err := c.ContainerLogs(ctx, connect.NewRequest(req))
	if connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), "no previous run") {
		t.Errorf("previous of the first run: %v", err)
	}
	newTestLog(t, runLogPath(dir, "app", 1), 1<<20, 3).entry(t0, "F", "second run")
	for _, previous := range []bool{false, true} {
		r := podReq("app")
		r.Previous = previous
		st, err := c.StreamContainerLogs(ctx, connect.NewRequest(r))
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		for st.Receive() {
			got.Write(st.Msg().GetData())
		}
		want := map[bool]string{false: "second run\n", true: "first run\n"}[previous]
		if st.Err() != nil || got.String() != want {
			t.Errorf("previous %v: %q, %v; want %q", previous, got.String(), st.Err(), want)
		}
	}
}

// TestContainerLogsBounded: the unary call refuses a log larger than it
// returns, pointing at streaming, and serves a bounded part of it.
func TestContainerLogsBounded(t *testing.T) {
	dir := t.TempDir()
	var running atomic.Bool
	c := logServer(t, dir, &running)
	l := newTestLog(t, runLogPath(dir, "app", 0), 64<<20, 3)
	line := strings.Repeat("x", 1023)
	for range maxUnaryLogBytes/1024 + 10 {
		l.entry(t0, "F", line)
	}
	ctx := context.Background()
	_, err := c.ContainerLogs(ctx, connect.NewRequest(podReq("app")))
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "stream it") {
		t.Fatalf("a log past the bound: %v", err)
	}
	req := podReq("app")
	req.TailLines = new(int64)
	*req.TailLines = 2
	res, err := c.ContainerLogs(ctx, connect.NewRequest(req))
	if err != nil || res.Msg.GetData() == nil || string(res.Msg.GetData()) != line+"\n"+line+"\n" {
		t.Fatalf("tail 2: %d bytes, %v", len(res.Msg.GetData()), err)
	}
	bad := podReq("app")
	bad.LimitBytes = new(int64)
	if _, err := c.ContainerLogs(ctx, connect.NewRequest(bad)); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "limitBytes") {
		t.Errorf("limit 0: %v", err)
	}
}

// BenchmarkStreamContainerLogs streams a 1 GiB log through the agent's
// handler over HTTP/2 and reports the throughput and the peak heap while
// it does.
func BenchmarkStreamContainerLogs(b *testing.B) {
	dir := b.TempDir()
	path := runLogPath(dir, "app", 0)
	l := newTestLog(b, path, 256<<20, 5)
	const total = 1 << 30
	line := []byte(t0.Format(time.RFC3339Nano) + " stdout F " + strings.Repeat("x", 200) + "\n")
	block := bytes.Repeat(line, (1<<20)/len(line))
	var written int64
	for written < total {
		l.write(block)
		written += int64(len(block))
	}
	s := newLogService(dir, nil, slog.New(slog.DiscardHandler))
	mux := http.NewServeMux()
	mux.Handle(agentService{logService: s}.handler())
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	c := skiffv1connect.NewAgentServiceClient(srv.Client(), srv.URL)

	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	runtime.GC()
	b.SetBytes(written / int64(len(line)) * int64(len(line)-len(" stdout F ")-len(t0.Format(time.RFC3339Nano))))
	b.ResetTimer()
	for range b.N {
		st, err := c.StreamContainerLogs(context.Background(), connect.NewRequest(podReq("app")))
		if err != nil {
			b.Fatal(err)
		}
		var n int64
		for st.Receive() {
			n += int64(len(st.Msg().GetData()))
		}
		if err := st.Err(); err != nil && !errors.Is(err, io.EOF) {
			b.Fatal(err)
		}
		if n == 0 {
			b.Fatal("nothing streamed")
		}
	}
	b.StopTimer()
	close(stop)
	<-sampled
	b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MiB")
}

// TestPruneRuns: a container starting its third run keeps the logs of its
// second (for --previous) and nothing older, rotated files included.
func TestPruneRuns(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"0.log", "0.log.1", "0.log.2", "1.log", "1.log.1", "2.log", "10.log", "notes.txt", "1.logger"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pruneRuns(dir, 2)
	var left []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if want := []string{"1.logger", "10.log", "2.log", "notes.txt"}; !slices.Equal(left, want) {
		t.Errorf("left %v, want %v", left, want)
	}
}
