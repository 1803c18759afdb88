package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/cluster/pki"
)

// The tests of a cluster of several run each server as its own OS process
// of the skiff binary, so that a server can be killed with SIGKILL as a
// crashing machine would be, and restarted on its data directory.

// skiffBin is the skiff binary the cluster tests run, built once per run of
// the test binary and removed by TestMain.
var skiffBin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// skiffBinary builds the skiff binary into a temporary directory, once, and
// returns its path.
func skiffBinary(t testing.TB) string {
	t.Helper()
	skiffBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "skiff-e2e-bin-")
		if err != nil {
			skiffBin.err = err
			return
		}
		skiffBin.dir = dir
		path := filepath.Join(dir, "skiff")
		// Static, as `go tool task build` builds it.
		cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", path, "skiff.dev/skiff/cmd/skiff")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			skiffBin.err = fmt.Errorf("go build skiff: %w\n%s", err, out)
			return
		}
		skiffBin.path = path
	})
	if skiffBin.err != nil {
		t.Fatal(skiffBin.err)
	}
	return skiffBin.path
}

// removeSkiffBinary removes what skiffBinary built; TestMain calls it once
// every test has run.
func removeSkiffBinary() {
	if skiffBin.dir != "" {
		_ = os.RemoveAll(skiffBin.dir)
	}
}

// proc is one running skiff process of a test.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncWriter
	done chan struct{} // closed once it has exited; err is then set
	err  error
}

// startProc runs the skiff binary with args as a process of its own. It is
// killed, if still running, when the test ends, and what it printed is
// logged if the test failed.
func startProc(t *testing.T, name string, out *syncWriter, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(skiffBinary(t), args...), out: out, done: make(chan struct{})}
	fmt.Fprintf(out, "--- %s: skiff %s\n", name, strings.Join(args, " "))
	p.cmd.Stdout, p.cmd.Stderr = out, out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.kill)
	return p
}

// kill kills the process with SIGKILL, as a crash would end it, and waits
// until it has exited. Killing an exited process does nothing.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop asks the process to stop with SIGTERM, as a service manager does,
// and returns how it exited; nil is exit status 0.
func (p *proc) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	return p.wait()
}

// wait waits for the process to exit, up to 30s, and returns how it
// exited; nil is exit status 0. It kills a process that does not exit.
func (p *proc) wait() error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(30 * time.Second):
		p.kill()
		return fmt.Errorf("%s did not exit within 30s; killed", p.name)
	}
}

// exited says whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// serverProc is one server of a cluster of several: its addresses and data
// directory stay the same across restarts.
type serverProc struct {
	name              string // s1, s2, s3
	api, raft, gossip string
	dataDir           string
	clientConfig      string   // where it writes the admin's client config, in the test's directory
	token             string   // the cluster's join token, the same for every server
	join              []string // the other servers' gossip addresses
	out               *syncWriter
	p                 *proc
	killAt            time.Time // when kill was last called

	namespaces      skiffv1connect.NamespaceServiceClient
	watchNamespaces skiffv1connect.NamespaceServiceClient // no timeout
	pods            skiffv1connect.PodServiceClient
	nodes           skiffv1connect.NodeServiceClient
}

// start runs the server as it was configured, as a fresh process.
func (s *serverProc) start(t *testing.T) {
	t.Helper()
	s.p = startProc(t, s.name, s.out, "server", "--data-dir", s.dataDir, "--listen", s.api, "--raft-listen", s.raft,
		"--gossip-listen", s.gossip, "--bootstrap-expect", "3", "--join", strings.Join(s.join, ","), "--token", s.token,
		"--client-config", s.clientConfig, "--log-level", "warn")
}

// kill ends the server with SIGKILL.
func (s *serverProc) kill() {
	s.killAt = time.Now()
	s.p.kill()
}

// servers is a cluster of three servers, on 127.0.0.1, 127.0.0.2 and
// 127.0.0.3, each a process with a data directory of its own.
type servers struct {
	t     *testing.T
	all   []*serverProc
	token string // the join token they share
	// config is the admin's client config that the first server wrote in
	// its data directory: the CLI's --config. admin is what it holds.
	config string
	admin  clientConfig
	http   *http.Client // unary calls, with a bound, as the admin
	// watches, with none; their connections closed when the test ends.
	stream *http.Client
}

// startServers starts three servers that form a cluster together
// (--bootstrap-expect 3, each joining the other two) and waits until one
// leads, the other two vote and every server answers a linearizable read.
//
// The servers share a join token; the API calls of the test are the
// admin's, with the token and the cluster CA of the client config the
// first server writes once it is ready.
func startServers(t *testing.T) *servers {
	t.Helper()
	c := &servers{t: t, token: pki.NewToken()}
	for i := 1; i <= 3; i++ {
		host := fmt.Sprintf("127.0.0.%d", i)
		s := &serverProc{
			name: fmt.Sprintf("s%d", i), api: freeHostAddr(t, host, false), raft: freeHostAddr(t, host, false),
			gossip: freeHostAddr(t, host, true), dataDir: t.TempDir(), out: &syncWriter{w: new(bytes.Buffer)},
			clientConfig: filepath.Join(t.TempDir(), "client.config"), token: c.token,
		}
		c.all = append(c.all, s)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, s := range c.all {
				t.Logf("server %s (api %s) output:\n%s", s.name, s.api, s.out.String())
			}
		}
	})
	for _, s := range c.all {
		for _, o := range c.all {
			if o != s {
				s.join = append(s.join, o.gossip)
			}
		}
		s.start(t)
	}
	c.config = adminConfigPath(c.all[0].dataDir)
	c.admin = waitAdminConfig(t, c.all[0].dataDir, 60*time.Second)
	tr, closeTr := adminTransport(t, c.admin)
	str, closeStr := adminTransport(t, c.admin)
	t.Cleanup(func() {
		closeTr()
		closeStr()
	})
	c.http = &http.Client{Transport: tr, Timeout: 15 * time.Second}
	c.stream = &http.Client{Transport: str}
	for _, s := range c.all {
		base := c.baseURL(s.api)
		s.namespaces = skiffv1connect.NewNamespaceServiceClient(c.http, base)
		s.watchNamespaces = skiffv1connect.NewNamespaceServiceClient(c.stream, base)
		s.pods = skiffv1connect.NewPodServiceClient(c.http, base)
		s.nodes = skiffv1connect.NewNodeServiceClient(c.http, base)
	}
	c.waitFormed(60 * time.Second)
	return c
}

// baseURL is the URL of the API at addr, as the admin's client config
// reaches it (https).
func (c *servers) baseURL(addr string) string {
	return clientConfig{Server: addr, CA: c.admin.CA}.baseURL()
}

// cli is the CLI as the admin runs it against s.
func (c *servers) cli(s *serverProc) *cluster {
	return &cluster{t: c.t, server: s.api, config: c.config}
}

// waitFormed waits until members, asked of every running server, shows the
// three servers alive, one the leader and two voters, and a linearizable
// List answers through every running server.
func (c *servers) waitFormed(timeout time.Duration) {
	c.t.Helper()
	var why string
	eventually(c.t, timeout, func() bool {
		for _, s := range c.running() {
			ms, err := c.members(s)
			if err != nil {
				why = fmt.Sprintf("members on %s: %v", s.name, err)
				return false
			}
			roles := map[string]int{}
			for _, m := range ms {
				if m.role == "server" && m.state == "alive" {
					roles[m.raft]++
				}
			}
			if roles["leader"] != 1 || roles["voter"] != 2 {
				why = fmt.Sprintf("members on %s: %+v", s.name, ms)
				return false
			}
			if _, err := c.list(s, false); err != nil {
				why = fmt.Sprintf("list on %s: %v", s.name, err)
				return false
			}
		}
		return true
	}, func() string { return "the three servers did not form a cluster: " + why })
}

// running lists the servers whose process runs.
func (c *servers) running() []*serverProc {
	var out []*serverProc
	for _, s := range c.all {
		if !s.p.exited() {
			out = append(out, s)
		}
	}
	return out
}

// member is a row of `skiff members`.
type member struct{ name, role, raft, state, api, raftAddr, gossip string }

// members runs `skiff members` against s, as a user would, and parses the
// table it prints.
func (c *servers) members(s *serverProc) ([]member, error) {
	out, err := c.cli(s).skiff("members")
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "NAME ") {
		return nil, fmt.Errorf("skiff members printed %q", out)
	}
	var ms []member
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 7 {
			return nil, fmt.Errorf("skiff members printed a row of %d columns: %q", len(f), l)
		}
		ms = append(ms, member{f[0], f[1], f[2], f[3], f[4], f[5], f[6]})
	}
	return ms, nil
}

// leader asks a running server's `skiff members` which server leads.
func (c *servers) leader() *serverProc {
	c.t.Helper()
	var why string
	var leader *serverProc
	eventually(c.t, 20*time.Second, func() bool {
		for _, s := range c.running() {
			ms, err := c.members(s)
			if err != nil {
				why = err.Error()
				continue
			}
			for _, m := range ms {
				if m.raft == "leader" {
					for _, l := range c.running() {
						if l.api == m.api {
							leader = l
							return true
						}
					}
				}
			}
			why = fmt.Sprintf("members on %s: %+v", s.name, ms)
		}
		return false
	}, func() string { return "no running server leads: " + why })
	return leader
}

// list lists the namespaces through s: linearizable (answered by the
// leader), or stale (from s's own state, with Skiff-Consistency: stale).
func (c *servers) list(s *serverProc, stale bool) (*skiffv1.NamespaceList, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := connect.NewRequest(&skiffv1.ListRequest{})
	if stale {
		req.Header().Set("Skiff-Consistency", "stale")
	}
	res, err := s.namespaces.List(ctx, req)
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// freeHostAddr returns host:port with a port no one listens on now, on TCP
// and, for a gossip address, on UDP too.
func freeHostAddr(t *testing.T, host string, udp bool) string {
	t.Helper()
	addr, err := freePort(host, udp)
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// nsRevisions maps each namespace of a list to its resourceVersion. It
// reports a name listed twice.
func nsRevisions(t *testing.T, l *skiffv1.NamespaceList) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, ns := range l.GetItems() {
		name := ns.GetMetadata().GetName()
		if _, dup := out[name]; dup {
			t.Errorf("namespace %s is listed twice", name)
		}
		out[name] = ns.GetMetadata().GetResourceVersion()
	}
	return out
}

// diffRevisions describes how got differs from want, name by name; empty
// when they are the same.
func diffRevisions(got, want map[string]uint64) string {
	var d []string
	for name, rv := range want {
		if g, ok := got[name]; !ok {
			d = append(d, fmt.Sprintf("%s (rv %d) missing", name, rv))
		} else if g != rv {
			d = append(d, fmt.Sprintf("%s at rv %d, want %d", name, g, rv))
		}
	}
	for name, rv := range got {
		if _, ok := want[name]; !ok {
			d = append(d, fmt.Sprintf("%s (rv %d) not expected", name, rv))
		}
	}
	slices.Sort(d)
	return strings.Join(d, "; ")
}

// writeLoad creates namespaces with unique names from several goroutines,
// each through the servers in turn; a write that fails is tried again on
// the next server until it is acknowledged or found to exist, so that once
// the load has stopped every write it sent has a known outcome.
type writeLoad struct {
	mu sync.Mutex
	// acked are the acknowledged writes: name and resourceVersion, with
	// when the call started and when its answer came.
	acked []ackedWrite
	// present were refused as AlreadyExists when tried again after a
	// failure: an earlier try took effect but was not acknowledged.
	present []string
	// failures counts the failed tries; firstErrs keeps a few, and
	// unexpected what no retry explains (AlreadyExists on a first try).
	failures   int
	firstErrs  []string
	unexpected []string

	stopping chan struct{} // closed by stop: write no new name
	stopOnce sync.Once
	cancel   context.CancelFunc // ends the calls in flight, when the test ends
	wg       sync.WaitGroup
}

type ackedWrite struct {
	name       string
	rv         uint64
	start, end time.Time
}

// startLoad starts writers goroutines writing through the servers until
// stop is called.
func startLoad(c *servers, writers int, prefix string) *writeLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &writeLoad{stopping: make(chan struct{}), cancel: cancel}
	for w := range writers {
		l.wg.Go(func() { l.write(ctx, c.all, w, fmt.Sprintf("%s-%d", prefix, w)) })
	}
	c.t.Cleanup(func() {
		cancel()
		l.stop()
	})
	return l
}

// stop stops the writers once the write each is sending has a known
// outcome, and waits for them.
func (l *writeLoad) stop() {
	l.stopOnce.Do(func() { close(l.stopping) })
	l.wg.Wait()
}

func (l *writeLoad) write(ctx context.Context, all []*serverProc, next int, prefix string) {
	for i := 0; ; i++ {
		select {
		case <-l.stopping:
			return
		default:
		}
		name := fmt.Sprintf("%s-%d", prefix, i)
		for try := 0; ; try++ {
			if ctx.Err() != nil {
				return
			}
			s := all[next%len(all)]
			next++
			callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			start := time.Now()
			res, err := s.namespaces.Create(callCtx, connect.NewRequest(&skiffv1.Namespace{Metadata: &skiffv1.ObjectMeta{Name: name}}))
			end := time.Now()
			cancel()
			if err == nil {
				l.mu.Lock()
				l.acked = append(l.acked, ackedWrite{name: name, rv: res.Msg.GetMetadata().GetResourceVersion(), start: start, end: end})
				l.mu.Unlock()
				break
			}
			if ctx.Err() != nil {
				return
			}
			l.mu.Lock()
			if connect.CodeOf(err) == connect.CodeAlreadyExists {
				if try == 0 {
					l.unexpected = append(l.unexpected, fmt.Sprintf("create %s on %s, its first try: %v", name, s.name, err))
				} else {
					l.present = append(l.present, name)
				}
				l.mu.Unlock()
				break
			}
			l.failures++
			if len(l.firstErrs) < 5 {
				l.firstErrs = append(l.firstErrs, fmt.Sprintf("%s via %s: %v", name, s.name, err))
			}
			l.mu.Unlock()
		}
	}
}

// ackedAfter counts the writes acknowledged after since.
func (l *writeLoad) ackedAfter(since time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.acked {
		if a.end.After(since) {
			n++
		}
	}
	return n
}

// firstStartedAfter returns the first acknowledged write that was sent
// after t, by when its answer came.
func (l *writeLoad) firstStartedAfter(t time.Time) (ackedWrite, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first ackedWrite
	found := false
	for _, a := range l.acked {
		if !a.start.Before(t) && (!found || a.end.Before(first.end)) {
			first, found = a, true
		}
	}
	return first, found
}

// longestGap returns the longest time between two acknowledgements in a
// row, the later one in (from, to].
func (l *writeLoad) longestGap(from, to time.Time) time.Duration {
	l.mu.Lock()
	ends := make([]time.Time, 0, len(l.acked))
	for _, a := range l.acked {
		ends = append(ends, a.end)
	}
	l.mu.Unlock()
	slices.SortFunc(ends, func(a, b time.Time) int { return a.Compare(b) })
	var longest time.Duration
	for i := 1; i < len(ends); i++ {
		if ends[i].After(from) && !ends[i].After(to) {
			longest = max(longest, ends[i].Sub(ends[i-1]))
		}
	}
	return longest
}

// checkAgainst checks the load's writes against a list of the namespaces
// taken after it stopped: every acknowledged write is there at the
// revision it was acknowledged with, every write found to exist is there,
// no two at the same revision, and nothing else is there but default.
func (l *writeLoad) checkAgainst(t *testing.T, listed map[string]uint64) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, u := range l.unexpected {
		t.Errorf("a write of a new name was refused as existing: %s", u)
	}
	known := map[string]bool{"default": true}
	for _, a := range l.acked {
		known[a.name] = true
		if rv, ok := listed[a.name]; !ok {
			t.Errorf("namespace %s, acknowledged at rv %d, is missing", a.name, a.rv)
		} else if rv != a.rv {
			t.Errorf("namespace %s was acknowledged at rv %d but is listed at rv %d", a.name, a.rv, rv)
		}
	}
	for _, name := range l.present {
		known[name] = true
		if _, ok := listed[name]; !ok {
			t.Errorf("namespace %s was refused as existing when tried again, but is not listed", name)
		}
	}
	revs := map[uint64]string{}
	for name, rv := range listed {
		if other, dup := revs[rv]; dup {
			t.Errorf("namespaces %s and %s are both listed at rv %d", other, name, rv)
		}
		revs[rv] = name
		if !known[name] {
			t.Errorf("namespace %s (rv %d) is listed, but its write was neither acknowledged nor found to exist when tried again", name, rv)
		}
	}
}

// summary says what the load did, for the test's log.
func (l *writeLoad) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("%d writes acknowledged, %d present but unacknowledged, %d tries failed (%s)",
		len(l.acked), len(l.present), l.failures, strings.Join(l.firstErrs, " | "))
}
