package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"skiff.dev/skiff/control/api/events"
	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// PodDialer opens connections from inside a pod's network namespace, for
// probes: the agent never enters a namespace itself. The node assembly
// provides one built on the netns package.
type PodDialer interface {
	// DialContext dials address (an IP and a port) on network ("tcp")
	// from inside the network namespace pinned at netnsPath.
	DialContext(ctx context.Context, netnsPath, network, address string) (net.Conn, error)
}

// Kubernetes' probe defaults.
const (
	defaultProbeTimeout   = 1
	defaultProbePeriod    = 10
	defaultProbeSuccess   = 1
	defaultProbeFailure   = 3
	maxProbeBody          = 10 << 10 // bytes of an HTTP answer kept for the failure message
	probeUserAgent        = "kube-probe/skiff"
	probeKindLiveness     = "Liveness"
	probeKindReadiness    = "Readiness"
	probeKindStartup      = "Startup"
	defaultProbeHost      = "127.0.0.1"
	probeFailureMsgLength = 256
)

// probes runs the probes of one run of one container, each on its own
// goroutine, and tells the worker (through poke) when their verdict
// changes. The worker reads the verdict through its methods; stop ends
// them.
type probes struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	started   bool   // the startup probe succeeded (true without one)
	ready     bool   // the readiness probe's verdict (true without one)
	unhealthy string // set once liveness or startup failed failureThreshold times
}

// probeTarget is what a probe goroutine needs of its pod and container.
type probeTarget struct {
	w         *podWorker
	pod       *skiffv1.Pod // for events; not changed once handed over
	container *skiffv1.Container
	netnsPath string
}

func hasProbes(spec *skiffv1.Container) bool {
	return spec.GetLivenessProbe() != nil || spec.GetReadinessProbe() != nil || spec.GetStartupProbe() != nil
}

// startProbes starts the probes of a running container; nil when it has
// none.
func (w *podWorker) startProbes(spec *skiffv1.Container, netnsPath string) *probes {
	if !hasProbes(spec) {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &probes{cancel: cancel, started: spec.GetStartupProbe() == nil, ready: spec.GetReadinessProbe() == nil}
	tg := probeTarget{w: w, pod: w.pod, container: spec, netnsPath: netnsPath}
	startedCh := make(chan struct{})
	if p.started {
		close(startedCh)
	}
	run := func(kind string, pr *skiffv1.Probe, gate <-chan struct{}) {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.loop(ctx, tg, kind, pr, gate, startedCh)
		}()
	}
	if pr := spec.GetStartupProbe(); pr != nil {
		run(probeKindStartup, pr, nil)
	}
	if pr := spec.GetLivenessProbe(); pr != nil {
		run(probeKindLiveness, pr, startedCh)
	}
	if pr := spec.GetReadinessProbe(); pr != nil {
		run(probeKindReadiness, pr, startedCh)
	}
	return p
}

// stop ends the probes and waits for them. Safe on nil.
func (p *probes) stop() {
	if p == nil {
		return
	}
	p.cancel()
	p.wg.Wait()
}

// verdict returns whether the container has started (by its startup
// probe), is ready (by its readiness probe), and why it is unhealthy, if
// it is. A nil probes has started, is ready and healthy.
func (p *probes) verdict() (started, ready bool, unhealthy string) {
	if p == nil {
		return true, true, ""
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.started, p.ready, p.unhealthy
}

// loop runs one probe on its period until ctx ends, after gate (the startup
// probe's success) and the initial delay.
func (p *probes) loop(ctx context.Context, tg probeTarget, kind string, pr *skiffv1.Probe, gate <-chan struct{}, startedCh chan struct{}) {
	unit := tg.w.a.timing.probeUnit
	if gate != nil {
		select {
		case <-ctx.Done():
			return
		case <-gate:
		}
	}
	period := time.Duration(orDefault(pr.GetPeriodSeconds(), defaultProbePeriod)) * unit
	timeout := time.Duration(orDefault(pr.GetTimeoutSeconds(), defaultProbeTimeout)) * unit
	successes := orDefault(pr.GetSuccessThreshold(), defaultProbeSuccess)
	failures := orDefault(pr.GetFailureThreshold(), defaultProbeFailure)
	wait := time.Duration(pr.GetInitialDelaySeconds()) * unit
	var okRun, failRun int32
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = period
		err := tg.probe(ctx, pr, timeout)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			okRun, failRun = okRun+1, 0
		} else {
			okRun, failRun = 0, failRun+1
			tg.w.a.events.Record(tg.pod, events.Warning, "Unhealthy", "%s probe failed: %s", kind, shorten(err.Error()))
		}
		changed, done := false, false
		p.mu.Lock()
		switch kind {
		case probeKindStartup:
			if okRun >= 1 {
				p.started, changed, done = true, true, true
				close(startedCh)
			} else if failRun >= failures {
				p.unhealthy = fmt.Sprintf("Container %s failed startup probe: %s", tg.container.GetName(), shorten(err.Error()))
				changed, done = true, true
			}
		case probeKindLiveness:
			if failRun >= failures {
				p.unhealthy = fmt.Sprintf("Container %s failed liveness probe: %s", tg.container.GetName(), shorten(err.Error()))
				changed, done = true, true
			}
		case probeKindReadiness:
			if !p.ready && okRun >= successes {
				p.ready, changed = true, true
			} else if p.ready && failRun >= failures {
				p.ready, changed = false, true
			}
		}
		p.mu.Unlock()
		if changed {
			tg.w.poke()
		}
		if done {
			return
		}
	}
}

func orDefault(v, def int32) int32 {
	if v <= 0 {
		return def
	}
	return v
}

func shorten(s string) string {
	if len(s) > probeFailureMsgLength {
		return s[:probeFailureMsgLength] + "..."
	}
	return s
}

// probe runs one check within timeout: a TCP connect or an HTTP GET
// answered with a status in [200, 400), from inside the pod's network
// namespace.
func (tg probeTarget) probe(ctx context.Context, pr *skiffv1.Probe, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dial := func(ctx context.Context, network, address string) (net.Conn, error) {
		d := tg.w.a.cfg.Dialer
		if d == nil {
			return nil, fmt.Errorf("this node cannot reach into pods (no dialer)")
		}
		return d.DialContext(ctx, tg.netnsPath, network, address)
	}
	switch {
	case pr.GetTcpSocket() != nil:
		port, err := resolvePort(tg.container, pr.GetTcpSocket().GetPort())
		if err != nil {
			return err
		}
		c, err := dial(ctx, "tcp", net.JoinHostPort(defaultProbeHost, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return c.Close()
	case pr.GetHttpGet() != nil:
		return tg.httpGet(ctx, pr.GetHttpGet(), dial)
	case pr.GetExec() != nil:
		return fmt.Errorf("exec probes are not supported: a Wasm container cannot run a command")
	}
	return fmt.Errorf("the probe has no action")
}

func (tg probeTarget) httpGet(ctx context.Context, h *skiffv1.HTTPGetAction, dial func(context.Context, string, string) (net.Conn, error)) error {
	port, err := resolvePort(tg.container, h.GetPort())
	if err != nil {
		return err
	}
	host := h.GetHost()
	if host == "" {
		host = defaultProbeHost
	}
	scheme := strings.ToLower(h.GetScheme())
	if scheme == "" {
		scheme = "http"
	}
	path := h.GetPath()
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	tr := &http.Transport{
		DialContext:       dial,
		DisableKeepAlives: true,
		// As the kubelet: probes check liveness, not certificates.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec
		Proxy:           nil,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, strconv.Itoa(port))+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", probeUserAgent)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxProbeBody))
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe failed with statuscode: %d: %s", resp.StatusCode, shorten(string(body)))
	}
	return nil
}

// resolvePort turns a probe's port (a number or the name of one of the
// container's ports) into a number.
func resolvePort(c *skiffv1.Container, port string) (int, error) {
	if n, err := strconv.Atoi(port); err == nil {
		if n < 1 || n > 65535 {
			return 0, fmt.Errorf("port %d is out of range", n)
		}
		return n, nil
	}
	for _, p := range c.GetPorts() {
		if p.GetName() == port {
			return int(p.GetContainerPort()), nil
		}
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.GetName(), port)
}
