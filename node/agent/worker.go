package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/control/api/events"
	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// podWorker owns one pod on this node: its sandbox, its containers and the
// status it reports. Only its run goroutine touches its fields; others hand
// it the newest pod through update.
type podWorker struct {
	a    *Agent
	log  *slog.Logger
	uid  string
	done chan struct{}

	mu      sync.Mutex // guards next and deleted, the mailbox
	next    *skiffv1.Pod
	deleted bool
	wake    chan struct{}

	// Owned by run.
	pod        *skiffv1.Pod
	sandboxID  string
	startTime  time.Time
	containers map[string]*containerRun
	reported   *skiffv1.PodStatus
	// written is the pod as the worker's last status write left it: the
	// base of the next write when it is newer than pod.
	written    *skiffv1.Pod
	sandboxErr string
	// released is set once the sandbox of a finished pod is stopped, so
	// that its network namespace is given back while its logs stay.
	released bool
	// confirmed is set once the deletion of the pod was confirmed to the
	// API; the worker then waits for the pod to go.
	confirmed bool
	// unreported is set while the API lacks the pod's current status (a
	// write failed): the worker tries again after timing.retry.
	unreported bool
	// netnsPath is the sandbox's network namespace, for probes; read from
	// the CRI when the first probe starts.
	netnsPath string
	// podIPs are the sandbox's IPs on the pod network, primary first, read
	// from the CRI once the sandbox exists; none for a pod on the node's
	// network or a node without a pod network.
	podIPs []string
	// initialized is set once every init container has succeeded, or a
	// container of the pod was found running: init containers do not run
	// again for this sandbox.
	initialized bool
	// startCtx is the context of the worker's StartContainer calls; its
	// cancel ends one left in flight once the pod's sandbox is gone.
	startCtx    context.Context
	cancelStart context.CancelFunc
}

// containerRun is what the worker knows of one container of the pod.
type containerRun struct {
	id       string // current CRI container, "" when none
	attempt  uint32
	restarts uint32
	state    *skiffv1.ContainerState
	last     *skiffv1.ContainerState
	imageID  string
	// failed is set when the container can never run (an invalid module);
	// the pod is then Failed.
	failed       bool
	backoff      time.Duration
	backoffUntil time.Time
	// probes runs the probes of the current run while it runs; nil when
	// the container has none or does not run.
	probes *probes
	// init is set for an init container: it runs to success before the
	// pod's containers start, and restarts only on failure.
	init bool
	// starting is set while a StartContainer call of id, left behind for
	// the pod's termination, is still in flight; it gets its result.
	starting chan error
	// unstarted is set for a container adopted in state CREATED: the
	// agent was stopped between its create and its start.
	unstarted bool
}

// stopProbes ends the probes of the container's current run.
func (c *containerRun) stopProbes() {
	c.probes.stop()
	c.probes = nil
}

func newPodWorker(a *Agent, p *skiffv1.Pod) *podWorker {
	return &podWorker{
		a:          a,
		log:        a.log.With("pod", p.GetMetadata().GetNamespace()+"/"+p.GetMetadata().GetName()),
		uid:        p.GetMetadata().GetUid(),
		done:       make(chan struct{}),
		next:       p,
		wake:       make(chan struct{}, 1),
		containers: map[string]*containerRun{},
	}
}

// update hands the worker a newer version of its pod, or tells it the pod
// is gone. It never blocks; only the latest pod counts.
func (w *podWorker) update(p *skiffv1.Pod, deleted bool) {
	w.mu.Lock()
	if p != nil {
		w.next = p
	}
	w.deleted = w.deleted || deleted
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// poke wakes the worker to look at its containers again: one of them
// changed. It never blocks.
func (w *podWorker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *podWorker) take() (*skiffv1.Pod, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.next
	w.next = nil
	return p, w.deleted
}

func (w *podWorker) run(ctx context.Context) {
	defer close(w.done)
	defer w.stopAllProbes()
	defer w.abandonStarts()
	for {
		p, deleted := w.take()
		if p != nil {
			w.pod = p
		}
		if deleted {
			w.teardown(ctx)
			return
		}
		if w.pod.GetMetadata().GetDeletionTimestamp() != nil {
			w.terminate(ctx)
		} else {
			w.sync(ctx)
			w.report(ctx)
			w.release(ctx)
		}
		var timeout <-chan time.Time
		var t *time.Timer
		if d := w.interval(); d != never {
			t = time.NewTimer(d)
			timeout = t.C
		}
		select {
		case <-ctx.Done():
		case <-w.wake:
		case <-timeout:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// never is the interval of a worker with nothing to wait for: it looks
// again only when woken, by a new version of its pod or by the PLEG when
// one of its containers changes.
const never time.Duration = -1

// interval is how long to wait before looking again without being woken:
// until the end of a restart back-off, a retry after a failed call, else
// never. A running container is not polled: its exit wakes the worker.
func (w *podWorker) interval() time.Duration {
	if w.pod.GetMetadata().GetDeletionTimestamp() != nil {
		if w.confirmed {
			return never
		}
		return w.a.timing.retry // retry the confirmation
	}
	if w.sandboxID == "" && !terminal(w.pod.GetStatus().GetPhase()) {
		return w.a.timing.retry // retry making the sandbox
	}
	d := never
	if w.unreported {
		d = w.a.timing.retry
	}
	for _, c := range w.containers {
		if c.id != "" || c.failed || w.doneForGood(c) {
			continue
		}
		wait := w.a.timing.recreate // could not be made (image, CRI error): try again
		if !c.backoffUntil.IsZero() {
			wait = max(c.backoffUntil.Sub(w.a.now()), 0)
		}
		if d == never || wait < d {
			d = wait
		}
	}
	return d
}

func (w *podWorker) labels() map[string]string {
	m := w.pod.GetMetadata()
	return map[string]string{LabelPodUID: m.GetUid(), LabelPodName: m.GetName(), LabelPodNamespace: m.GetNamespace()}
}

// logDir is where the pod's container logs go, as the kubelet lays them out.
func (w *podWorker) logDir() string {
	m := w.pod.GetMetadata()
	return filepath.Join(w.a.cfg.LogDir, podLogDirName(m.GetNamespace(), m.GetName(), m.GetUid()))
}

func podLogDirName(ns, name, uid string) string { return ns + "_" + name + "_" + uid }

// sync moves the pod one step toward running as its spec says.
func (w *podWorker) sync(ctx context.Context) {
	if w.sandboxID == "" {
		sb, err := w.findSandbox(ctx)
		if err == nil && sb != nil && sb.State != runtimeapi.PodSandboxState_SANDBOX_READY && !terminal(w.pod.GetStatus().GetPhase()) {
			// Its network namespace is gone (the node rebooted): the pod
			// needs a new sandbox, as the kubelet makes one.
			if !w.replaceSandbox(ctx, sb) {
				return
			}
		} else if err == nil && sb != nil {
			w.adopt(ctx, sb)
		} else if terminal(w.pod.GetStatus().GetPhase()) {
			return // finished before this agent started: never run it again
		} else if !w.ensureSandbox(ctx) {
			return
		}
	}
	// Init containers run first, one at a time, each to success.
	for _, spec := range w.pod.GetSpec().GetInitContainers() {
		c := w.containerRun(spec.Name, true)
		if !w.initialized && !initDone(c) {
			w.syncContainer(ctx, spec, c)
		}
		if !w.initialized && !initDone(c) {
			return
		}
	}
	w.initialized = true
	for _, spec := range w.pod.GetSpec().GetContainers() {
		w.syncContainer(ctx, spec, w.containerRun(spec.Name, false))
	}
}

// containerRun returns what the worker knows of the container name, made
// on first use.
func (w *podWorker) containerRun(name string, init bool) *containerRun {
	c := w.containers[name]
	if c == nil {
		c = &containerRun{state: waiting("ContainerCreating", "")}
		w.containers[name] = c
	}
	c.init = init
	return c
}

// initDone reports whether an init container has run to success.
func initDone(c *containerRun) bool {
	t := c.state.GetTerminated()
	return t != nil && t.GetExitCode() == 0 && !c.failed
}

// doneForGood reports whether a container with no CRI container has ended
// and will not run again by restartPolicy: a start error under Never, or
// an end kept across a new sandbox.
func (w *podWorker) doneForGood(c *containerRun) bool {
	t := c.state.GetTerminated()
	return c.id == "" && t != nil && !w.shouldRestart(c, t.GetExitCode())
}

// terminal reports whether a pod phase is final: the kubelet never runs a
// Succeeded or Failed pod again.
func terminal(phase string) bool { return phase == "Succeeded" || phase == "Failed" }

// findSandbox returns the node's sandbox for this pod, if it has one,
// preferring a ready one. It asks the runtime for the sandboxes with the
// label this agent gives every sandbox of the pod (one without it is not
// the agent's), so that the answer is this pod's alone, not every sandbox
// of the node for each pod that starts; and it checks the sandbox
// metadata's uid, which CRI keeps for every sandbox.
func (w *podWorker) findSandbox(ctx context.Context) (*runtimeapi.PodSandbox, error) {
	res, err := w.a.cfg.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{
		Filter: &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{LabelPodUID: w.uid}},
	})
	if err != nil {
		return nil, err
	}
	var found *runtimeapi.PodSandbox
	for _, sb := range res.Items {
		if sb.GetMetadata().GetUid() != w.uid {
			continue
		}
		if found == nil || sb.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			found = sb
		}
	}
	return found, nil
}

// ensureSandbox creates the pod's sandbox.
func (w *podWorker) ensureSandbox(ctx context.Context) bool {
	if err := os.MkdirAll(w.logDir(), 0o755); err != nil {
		w.sandboxErr = fmt.Sprintf("create log directory: %v", err)
		return false
	}
	m := w.pod.GetMetadata()
	run, err := w.a.cfg.Runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{
		Config: &runtimeapi.PodSandboxConfig{
			Metadata:     &runtimeapi.PodSandboxMetadata{Name: m.GetName(), Namespace: m.GetNamespace(), Uid: m.GetUid()},
			LogDirectory: w.logDir(),
			Labels:       w.labels(),
			Annotations:  m.GetAnnotations(),
		},
		RuntimeHandler: w.pod.GetSpec().GetRuntimeClassName(),
	})
	if err != nil {
		w.sandboxErr = fmt.Sprintf("create pod sandbox: %s", status.Convert(err).Message())
		w.log.Warn("create sandbox failed", "err", err)
		if status.Code(err) == codes.InvalidArgument {
			for _, spec := range w.pod.GetSpec().GetContainers() {
				w.containers[spec.Name] = &containerRun{failed: true, state: terminated(128, "CreatePodSandboxError", w.sandboxErr)}
			}
		}
		return false
	}
	w.sandboxErr = ""
	w.sandboxID = run.PodSandboxId
	w.startTime = w.a.now()
	w.readPodIPs(ctx)
	w.log.Info("sandbox created", "sandbox", w.sandboxID, "ips", w.podIPs)
	return true
}

// readPodIPs reads the sandbox's pod IPs from the CRI, as the kubelet does
// once a sandbox runs. A failed read leaves them empty (the pod reports no
// IP); the next sandbox status read tries again.
func (w *podWorker) readPodIPs(ctx context.Context) {
	res, err := w.a.cfg.Runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: w.sandboxID})
	if err != nil {
		w.log.Warn("sandbox status for the pod's IPs", "sandbox", w.sandboxID, "err", err)
		return
	}
	w.podIPs = w.podIPs[:0]
	if ip := res.GetStatus().GetNetwork().GetIp(); ip != "" {
		w.podIPs = append(w.podIPs, ip)
	}
	for _, ip := range res.GetStatus().GetNetwork().GetAdditionalIps() {
		if ip.GetIp() != "" {
			w.podIPs = append(w.podIPs, ip.GetIp())
		}
	}
}

// adopt takes over a sandbox and its containers left by an earlier run of
// the agent, so a restart does not run the pod's containers again.
func (w *podWorker) adopt(ctx context.Context, sb *runtimeapi.PodSandbox) {
	w.sandboxID = sb.Id
	w.startTime = time.Unix(0, sb.CreatedAt)
	w.readPodIPs(ctx)
	res, err := w.a.cfg.Runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{
		Filter: &runtimeapi.ContainerFilter{PodSandboxId: sb.Id},
	})
	if err != nil {
		return
	}
	for _, ctr := range res.Containers {
		name := ctr.GetMetadata().GetName()
		c := w.containers[name]
		if c == nil {
			c = &containerRun{}
			w.containers[name] = c
		}
		if c.id == "" || ctr.GetMetadata().GetAttempt() >= c.attempt {
			c.id, c.attempt, c.restarts = ctr.Id, ctr.GetMetadata().GetAttempt(), ctr.GetMetadata().GetAttempt()
			c.state = waiting("ContainerCreating", "")
			c.unstarted = ctr.GetState() == runtimeapi.ContainerState_CONTAINER_CREATED
		}
		for _, spec := range w.pod.GetSpec().GetContainers() {
			if spec.Name == name {
				w.initialized = true // the pod got past its init containers
			}
		}
	}
}

// observe reads the container's state from CRI and, once it has exited,
// decides on a restart by the pod's restartPolicy.
func (w *podWorker) observe(ctx context.Context, spec *skiffv1.Container, c *containerRun) {
	res, err := w.a.cfg.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.id})
	if status.Code(err) == codes.NotFound {
		c.id = ""
		return
	}
	if err != nil {
		w.log.Warn("container status", "container", spec.Name, "err", err)
		return
	}
	st := res.GetStatus()
	if c.starting != nil {
		select {
		case err := <-c.starting:
			c.starting = nil
			if err != nil && st.GetState() == runtimeapi.ContainerState_CONTAINER_CREATED && w.pod.GetMetadata().GetDeletionTimestamp() == nil {
				w.startFailed(ctx, spec, c, err)
				return
			}
		default:
		}
	}
	switch st.GetState() {
	case runtimeapi.ContainerState_CONTAINER_CREATED:
		c.state = waiting("ContainerCreating", "")
		if c.unstarted && c.starting == nil && w.pod.GetMetadata().GetDeletionTimestamp() == nil {
			// Created but never started: the agent was stopped between
			// the two calls. Make it again, from the current spec.
			w.log.Info("removing a container created but never started", "container", spec.Name, "id", c.id)
			if _, err := w.a.cfg.Runtime.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c.id}); err != nil && status.Code(err) != codes.NotFound {
				w.log.Warn("remove a container never started", "container", spec.Name, "err", err)
				return
			}
			c.id, c.unstarted = "", false
			w.syncContainer(ctx, spec, c)
		}
	case runtimeapi.ContainerState_CONTAINER_RUNNING:
		c.state = &skiffv1.ContainerState{Running: &skiffv1.ContainerStateRunning{StartedAt: nanos(st.StartedAt)}}
		if w.pod.GetMetadata().GetDeletionTimestamp() != nil {
			return
		}
		if c.probes == nil && hasProbes(spec) {
			c.probes = w.startProbes(spec, w.sandboxNetns(ctx))
		}
		if _, _, why := c.probes.verdict(); why != "" {
			w.kill(ctx, spec, c, why)
		}
	default:
		c.stopProbes()
		c.state = &skiffv1.ContainerState{Terminated: &skiffv1.ContainerStateTerminated{
			ExitCode: proto.Int32(st.ExitCode), Reason: st.Reason, Message: st.Message,
			StartedAt: nanos(st.StartedAt), FinishedAt: nanos(st.FinishedAt),
		}}
		if c.imageID == "" {
			c.imageID = st.GetImageRef()
		}
		if w.pod.GetMetadata().GetDeletionTimestamp() == nil && w.shouldRestart(c, st.ExitCode) {
			_, _ = w.a.cfg.Runtime.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c.id})
			w.scheduleRestart(spec, c)
		}
	}
}

// kill stops a running container that failed its liveness or startup
// probe, within the pod's grace period, then looks at it again: its exit
// goes through restartPolicy as any other.
func (w *podWorker) kill(ctx context.Context, spec *skiffv1.Container, c *containerRun, why string) {
	c.stopProbes()
	w.log.Info("killing unhealthy container", "container", spec.Name, "why", why)
	w.record(events.Normal, "Killing", "%s, will be restarted", why)
	grace := int64(30)
	if g := w.pod.GetSpec().TerminationGracePeriodSeconds; g != nil {
		grace = *g
	}
	if _, err := w.a.cfg.Runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: c.id, Timeout: grace}); err != nil {
		w.log.Warn("stop unhealthy container", "container", spec.Name, "err", err)
		return
	}
	w.observe(ctx, spec, c)
}

// sandboxNetns returns the path of the sandbox's network namespace, from
// the CRI's verbose sandbox status; "" when it cannot be had (probes then
// fail, saying so).
func (w *podWorker) sandboxNetns(ctx context.Context) string {
	if w.netnsPath != "" || w.sandboxID == "" {
		return w.netnsPath
	}
	res, err := w.a.cfg.Runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: w.sandboxID, Verbose: true})
	if err != nil {
		w.log.Warn("sandbox status for probes", "err", err)
		return ""
	}
	var info struct {
		NetNSPath string `json:"netnsPath"`
	}
	if err := json.Unmarshal([]byte(res.GetInfo()["info"]), &info); err != nil {
		w.log.Warn("sandbox status for probes: no netnsPath in its info", "err", err)
		return ""
	}
	w.netnsPath = info.NetNSPath
	return w.netnsPath
}

// stopAllProbes ends the probes of every container.
func (w *podWorker) stopAllProbes() {
	for _, c := range w.containers {
		c.stopProbes()
	}
}

// shouldRestart applies the pod's restartPolicy to an exit; an init
// container is restarted only when it failed, and never under Never.
func (w *podWorker) shouldRestart(c *containerRun, exitCode int32) bool {
	if c.init {
		return exitCode != 0 && w.pod.GetSpec().GetRestartPolicy() != "Never"
	}
	switch w.pod.GetSpec().GetRestartPolicy() {
	case "Never":
		return false
	case "OnFailure":
		return exitCode != 0
	}
	return true
}

// scheduleRestart keeps the finished run as the container's last state and
// sets the next attempt after a doubling back-off, as the kubelet does.
func (w *podWorker) scheduleRestart(spec *skiffv1.Container, c *containerRun) {
	if c.state.GetTerminated() != nil {
		c.last = c.state
	}
	c.stopProbes()
	c.id = ""
	c.attempt++
	c.restarts++
	if c.backoff == 0 {
		c.backoff = w.a.timing.backoffStart
	} else if c.backoff *= 2; c.backoff > w.a.timing.backoffMax {
		c.backoff = w.a.timing.backoffMax
	}
	c.backoffUntil = w.a.now().Add(c.backoff)
	c.state = waiting("CrashLoopBackOff", fmt.Sprintf("back-off %s restarting failed container %s", c.backoff, spec.Name))
	w.log.Info("container will restart", "container", spec.Name, "in", c.backoff)
	w.record(events.Warning, "BackOff", "Back-off restarting failed container %s", spec.Name)
}

// report writes the pod's status when it changed since the last write.
func (w *podWorker) report(ctx context.Context) {
	st := w.status()
	if proto.Equal(st, w.reported) {
		w.unreported = false
		return
	}
	w.unreported = true
	// The write is a compare-and-swap on the newest version of the pod
	// the worker knows (its watch's, or its own last write's); only when
	// someone else wrote since (or no version is known) is the pod read
	// again.
	p := w.pod
	if w.written.GetMetadata().GetResourceVersion() > p.GetMetadata().GetResourceVersion() {
		p = w.written
	}
	for try := 0; try < 4; try++ {
		if try > 0 || p.GetMetadata().GetResourceVersion() == 0 {
			res, err := w.a.cfg.Pods.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Namespace: w.pod.Metadata.Namespace, Name: w.pod.Metadata.Name}))
			if err != nil {
				w.log.Debug("get pod for status", "err", err)
				return
			}
			p = res.Msg
		}
		if p.GetMetadata().GetUid() != w.uid || terminal(p.GetStatus().GetPhase()) {
			w.reported = st // replaced by another pod of the name, or final: nothing to write
			w.unreported = false
			return
		}
		// A copy: p may be the worker's own pod, whose stored status the
		// worker goes by until the watch brings the new one.
		p = &skiffv1.Pod{Metadata: p.Metadata, Spec: p.Spec, Status: mergeStatus(p.GetStatus(), st, w.a.now())}
		res, err := w.a.cfg.Pods.UpdateStatus(ctx, connect.NewRequest(p))
		if err == nil {
			w.reported, w.written = st, res.Msg
			w.unreported = false
			return
		}
		if connect.CodeOf(err) != connect.CodeAborted {
			w.log.Warn("write pod status", "err", err)
			return
		}
	}
}

// record reports an event about the worker's pod.
func (w *podWorker) record(typ, reason, format string, args ...any) {
	w.a.events.Record(w.pod, typ, reason, format, args...)
}
