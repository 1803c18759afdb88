package agent

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// fakePodNet stands for pods' network namespaces: a dial that names the
// expected namespace and a served address reaches that address's handler
// through an in-memory pipe; any other address is refused. Nothing touches
// a real network.
type fakePodNet struct {
	netns string

	mu    sync.Mutex
	ports map[string]http.Handler // by "127.0.0.1:port"
	dials []string                // addresses dialled, in order
}

func (f *fakePodNet) serve(addr string, h http.Handler) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ports == nil {
		f.ports = map[string]http.Handler{}
	}
	f.ports[addr] = h
}

func (f *fakePodNet) dialed(addr string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, d := range f.dials {
		if d == addr {
			n++
		}
	}
	return n
}

func (f *fakePodNet) DialContext(_ context.Context, netnsPath, network, addr string) (net.Conn, error) {
	if netnsPath != f.netns || network != "tcp" {
		return nil, fmt.Errorf("dial %s %s in %q: want tcp in %q", network, addr, netnsPath, f.netns)
	}
	f.mu.Lock()
	f.dials = append(f.dials, addr)
	h := f.ports[addr]
	f.mu.Unlock()
	if h == nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	}
	client, server := net.Pipe()
	go func() {
		defer server.Close()
		req, err := http.ReadRequest(bufio.NewReader(server))
		if err != nil {
			return // a TCP probe: connected, then closed
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		_ = rec.Result().Write(server)
	}()
	return client, nil
}

// switchable answers 200 while ok, else 503.
type switchable struct{ ok atomic.Bool }

func (s *switchable) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/healthz" || r.Header.Get("User-Agent") != probeUserAgent {
		http.Error(w, "wrong request "+r.URL.Path, http.StatusNotFound)
		return
	}
	if !s.ok.Load() {
		http.Error(w, "not yet", http.StatusServiceUnavailable)
	}
}

// probeWorker is a worker whose one container has probes, over fake CRI and
// a fake pod network, with probe seconds of 5ms and a clock the test moves
// safely.
func probeWorker(t *testing.T, policy string, edit func(*skiffv1.Container)) (*podWorker, *fakeCRI, *fakePods, *fakePodNet, *atomic.Int64) {
	w, cri, _ := newTestWorker(t, policy)
	clock := &atomic.Int64{}
	clock.Store(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC).UnixNano())
	w.a.now = func() time.Time { return time.Unix(0, clock.Load()) }
	w.a.timing.probeUnit = 5 * time.Millisecond
	net := &fakePodNet{netns: "/run/test/netns/sb0"}
	w.a.cfg.Dialer = net
	w.pod.Spec.TerminationGracePeriodSeconds = proto.Int64(5)
	c := w.pod.Spec.Containers[0]
	c.Ports = []*skiffv1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	edit(c)
	pods := newFakePods(w, cri)
	pods.updated = make(chan *skiffv1.PodStatus, 256)
	return w, cri, pods, net, clock
}

// waitStatus returns the first status written that cond accepts.
func waitStatus(t *testing.T, updated <-chan *skiffv1.PodStatus, what string, cond func(*skiffv1.PodStatus) bool) *skiffv1.PodStatus {
	t.Helper()
	timeout := time.After(10 * time.Second)
	var last *skiffv1.PodStatus
	for {
		select {
		case st := <-updated:
			if cond(st) {
				return st
			}
			last = st
		case <-timeout:
			t.Fatalf("no status written with %s; last %v", what, last)
		}
	}
}

func condition(st *skiffv1.PodStatus, typ string) *skiffv1.Condition {
	for _, c := range st.GetConditions() {
		if c.GetType() == typ {
			return c
		}
	}
	return nil
}

// TestReadinessProbe: a container is ready, and so is its pod, once its
// readiness probe (an HTTP GET from inside the pod's namespace) succeeds,
// and unready again after failureThreshold failures; conditions keep their
// transition time while they do not change.
func TestReadinessProbe(t *testing.T) {
	w, cri, pods, podNet, clock := probeWorker(t, "Always", func(c *skiffv1.Container) {
		c.ReadinessProbe = &skiffv1.Probe{HttpGet: &skiffv1.HTTPGetAction{Path: "/healthz", Port: "http"}, PeriodSeconds: 1, FailureThreshold: 2}
	})
	scheduledAt := timestamppb.New(time.Date(2026, 11, 26, 11, 0, 0, 0, time.UTC))
	// The scheduler's write, which the worker has not seen.
	pods.pod.Status.Conditions = []*skiffv1.Condition{{Type: "PodScheduled", Status: "True", LastTransitionTime: scheduledAt}}
	pods.pod.Metadata.ResourceVersion++
	app := &switchable{}
	podNet.serve("127.0.0.1:8080", app)
	startPLEG(t, w.a, cri, w)

	st := waitStatus(t, pods.updated, "the container running", func(st *skiffv1.PodStatus) bool { return st.Phase == "Running" })
	cs := st.ContainerStatuses[0]
	if cs.GetReady() || !cs.GetStarted() {
		t.Errorf("before its probe passed: ready %v, started %v; want not ready, started", cs.GetReady(), cs.GetStarted())
	}
	if c := condition(st, "Ready"); c.GetStatus() != "False" || c.GetReason() != "ContainersNotReady" || c.GetMessage() != "containers with unready status: [c]" {
		t.Errorf("Ready condition %v, want False, ContainersNotReady naming c", c)
	}
	firstInit := condition(st, "Initialized").GetLastTransitionTime().AsTime()

	clock.Add(int64(time.Minute))
	app.ok.Store(true)
	st = waitStatus(t, pods.updated, "the container ready", func(st *skiffv1.PodStatus) bool { return st.ContainerStatuses[0].GetReady() })
	for _, typ := range []string{"ContainersReady", "Ready"} {
		c := condition(st, typ)
		if c.GetStatus() != "True" || !c.GetLastTransitionTime().AsTime().Equal(time.Unix(0, clock.Load())) {
			t.Errorf("%s %v, want True since the clock's now", typ, c)
		}
	}
	if c := condition(st, "Initialized"); c.GetStatus() != "True" || !c.GetLastTransitionTime().AsTime().Equal(firstInit) {
		t.Errorf("Initialized %v: want True, its transition time kept at %s", c, firstInit)
	}
	if c := condition(st, "PodScheduled"); c.GetStatus() != "True" || !proto.Equal(c.GetLastTransitionTime(), scheduledAt) {
		t.Errorf("PodScheduled %v, want the scheduler's, kept", c)
	}

	app.ok.Store(false)
	st = waitStatus(t, pods.updated, "the container unready", func(st *skiffv1.PodStatus) bool { return !st.ContainerStatuses[0].GetReady() })
	if c := condition(st, "Ready"); c.GetStatus() != "False" {
		t.Errorf("Ready %v after the probe failed, want False", c)
	}
	if st.Phase != "Running" || cri.calls.count("StopContainer") != 0 {
		t.Errorf("phase %s, calls %q: a readiness failure must not stop the container", st.Phase, cri.calls.get())
	}
}

// TestLivenessProbe: a container that fails its liveness probe
// failureThreshold times is stopped with the pod's grace period, with an
// event for each failure and one for the kill; restartPolicy decides what
// comes next.
func TestLivenessProbe(t *testing.T) {
	for _, tt := range []struct {
		policy string
		want   func(*skiffv1.PodStatus) bool
	}{
		{"Always", func(st *skiffv1.PodStatus) bool {
			cs := st.ContainerStatuses[0]
			return st.Phase == "Running" && cs.GetRestartCount() == 1 && cs.GetLastState().GetTerminated().GetExitCode() == 137 &&
				cs.GetState().GetWaiting().GetReason() == "CrashLoopBackOff"
		}},
		{"Never", func(st *skiffv1.PodStatus) bool {
			return st.Phase == "Failed" && st.ContainerStatuses[0].GetState().GetTerminated().GetExitCode() == 137
		}},
	} {
		t.Run(tt.policy, func(t *testing.T) {
			w, cri, pods, podNet, _ := probeWorker(t, tt.policy, func(c *skiffv1.Container) {
				c.LivenessProbe = &skiffv1.Probe{TcpSocket: &skiffv1.TCPSocketAction{Port: "9090"}, PeriodSeconds: 1, FailureThreshold: 2}
			})
			written := recordEvents(t, w)
			startPLEG(t, w.a, cri, w)
			waitStatus(t, pods.updated, "the container killed, then "+tt.policy, tt.want)
			if got := cri.calls.count("StopContainer c1 timeout=5"); got != 1 {
				t.Errorf("calls %q: want one StopContainer c1 with the pod's grace of 5s", cri.calls.get())
			}
			if n := podNet.dialed("127.0.0.1:9090"); n != 2 {
				t.Errorf("probe dialled %d times before the kill, want failureThreshold 2", n)
			}
			evs := written()
			var unhealthy, killing int
			for _, e := range evs {
				if strings.HasPrefix(e, "Unhealthy: Liveness probe failed: ") && strings.Contains(e, "connection refused") {
					unhealthy++
				}
				if strings.HasPrefix(e, "Killing: Container c failed liveness probe: ") && strings.HasSuffix(e, ", will be restarted") {
					killing++
				}
			}
			if unhealthy != 2 || killing != 1 {
				t.Errorf("events %q: want 2 Unhealthy naming the refusal and 1 Killing", evs)
			}
		})
	}
}

// TestStartupProbeGates: until its startup probe succeeds a container is
// neither started nor ready, and its liveness probe does not run.
func TestStartupProbeGates(t *testing.T) {
	w, cri, pods, podNet, _ := probeWorker(t, "Always", func(c *skiffv1.Container) {
		c.StartupProbe = &skiffv1.Probe{HttpGet: &skiffv1.HTTPGetAction{Path: "healthz", Port: "8080"}, PeriodSeconds: 1, FailureThreshold: 1000}
		c.LivenessProbe = &skiffv1.Probe{TcpSocket: &skiffv1.TCPSocketAction{Port: "http"}, PeriodSeconds: 1}
	})
	app := &switchable{}
	podNet.serve("127.0.0.1:8080", app)
	startPLEG(t, w.a, cri, w)
	st := waitStatus(t, pods.updated, "the container running", func(st *skiffv1.PodStatus) bool { return st.Phase == "Running" })
	if cs := st.ContainerStatuses[0]; cs.GetStarted() || cs.GetReady() {
		t.Errorf("started %v ready %v before the startup probe passed", cs.GetStarted(), cs.GetReady())
	}
	eventually(t, 5*time.Second, func() bool { return podNet.dialed("127.0.0.1:8080") >= 3 }, func() string { return "the startup probe does not run" })
	app.ok.Store(true)
	st = waitStatus(t, pods.updated, "the container started", func(st *skiffv1.PodStatus) bool { return st.ContainerStatuses[0].GetStarted() })
	if !st.ContainerStatuses[0].GetReady() {
		t.Errorf("started but not ready, with no readiness probe")
	}
	// The liveness probe runs from now on: the startup probe and it
	// share the port, so dials go on after the startup probe stopped.
	n := podNet.dialed("127.0.0.1:8080")
	eventually(t, 5*time.Second, func() bool { return podNet.dialed("127.0.0.1:8080") > n+2 }, func() string { return "the liveness probe does not run" })
	podNet.mu.Lock()
	dials := slices.Clone(podNet.dials)
	podNet.mu.Unlock()
	if cri.calls.count("StopContainer") != 0 {
		t.Errorf("calls %q after dials %q: a healthy container was stopped", cri.calls.get(), dials)
	}
}
