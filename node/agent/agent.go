// Package agent is skiff's kubelet: it registers its Node, watches the pods
// bound to it, drives the node's CRI server over its socket to run them, and
// writes their status back through the API.
//
// It knows the control plane only as Connect API clients and the runtime
// only as a CRI client: it never touches the store, a namespace or a Wasm
// module itself. One goroutine owns each pod (see worker.go); the Run
// goroutine owns the set of workers.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/control/api/events"
	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
)

// Labels the agent puts on the sandboxes and containers it creates, so that
// after a restart it can tell its own from others' and find a pod's again.
// They are the kubelet's keys, so crictl shows pod names and namespaces.
const (
	LabelPodUID        = "io.kubernetes.pod.uid"
	LabelPodName       = "io.kubernetes.pod.name"
	LabelPodNamespace  = "io.kubernetes.pod.namespace"
	LabelContainerName = "io.kubernetes.container.name"
)

// Config is what New needs.
type Config struct {
	NodeName string
	Pods     skiffv1connect.PodServiceClient
	Nodes    skiffv1connect.NodeServiceClient
	// Services are read for the containers' service environment
	// variables; containers get none when nil.
	Services kinds.Client
	// Events receives the events of the node's pods; none are recorded
	// when nil.
	Events  skiffv1connect.EventServiceClient
	Runtime runtimeapi.RuntimeServiceClient
	Images  runtimeapi.ImageServiceClient
	// LogDir holds pod logs as <ns>_<name>_<uid>/<container>/<attempt>.log.
	LogDir string
	// VolumeDir holds pods' emptyDir and inline volumes as <uid>/<name>.
	VolumeDir string
	// AllowedHostPaths are the directories under which hostPath volumes
	// may be; none by default.
	AllowedHostPaths []string
	// Endpoint is the host:port the apiserver reaches this agent's API on.
	Endpoint string
	// MaxPods is how many unfinished pods the node takes (its "pods"
	// capacity, which the scheduler fills); DefaultMaxPods when 0.
	MaxPods int
	// NodeIP is the node's InternalIP: the address other nodes route this
	// node's pod CIDR through, and the pods' hostIP. Empty when unknown.
	NodeIP string
	Logger *slog.Logger
	// Version is reported in the Node status.
	Version string
	// Dialer reaches into pods' network namespaces for HTTP and TCP
	// probes; without one every such probe fails, saying why.
	Dialer PodDialer
}

// Agent runs the pods bound to one node.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	events *events.Recorder
	now    func() time.Time
	timing timing
	gc     dirGC

	services *serviceLinks // nil without Config.Services

	cidrMu  sync.Mutex // guards podCIDR; held across the CRI call
	podCIDR string     // the pod CIDR last given to the CRI server
}

// timing holds the agent's intervals, shortened in tests.
type timing struct {
	heartbeat    time.Duration // node status refresh
	retry        time.Duration // retry of a failed sandbox, status write or deletion
	recreate     time.Duration // retry of a container that could not be made (image missing, CRI error)
	backoffStart time.Duration // first restart delay; doubles per restart
	backoffMax   time.Duration
	rewatch      time.Duration // pause before opening a pod watch again
	// relist is how often the container list is compared with the last
	// one, the safety net under the CRI's container events (the
	// kubelet's PLEG relists every second; events make a slow one enough).
	relist time.Duration
	// fallbackRelist replaces relist with a runtime that sends no
	// container events (the kubelet's generic PLEG relists every second).
	fallbackRelist time.Duration
	// resubscribe is the first pause before opening the container event
	// stream again; it doubles up to resubscribeMax while it keeps failing.
	resubscribe    time.Duration
	resubscribeMax time.Duration
	// probeUnit is what a probe's "seconds" mean: a second, shorter in tests.
	probeUnit time.Duration
}

var defaultTiming = timing{
	heartbeat:      10 * time.Second,
	retry:          time.Second,
	recreate:       5 * time.Second,
	backoffStart:   10 * time.Second,
	backoffMax:     5 * time.Minute,
	rewatch:        time.Second,
	relist:         10 * time.Second,
	fallbackRelist: time.Second,
	resubscribe:    100 * time.Millisecond,
	resubscribeMax: 10 * time.Second,
	probeUnit:      time.Second,
}

// New returns an Agent.
func New(cfg Config) *Agent {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.Runtime, cfg.Images = withDeadlines(cfg.Runtime, callTimeout), withImageDeadlines(cfg.Images, callTimeout)
	a := &Agent{cfg: cfg, log: log.With("node", cfg.NodeName), now: time.Now, timing: defaultTiming}
	if cfg.Services != nil {
		a.services = newServiceLinks(cfg.Services, a.log)
	}
	if cfg.Events != nil {
		a.events = events.NewRecorder(events.Config{Events: cfg.Events, Component: "agent", Host: cfg.NodeName, Logger: a.log})
	}
	return a
}

// Handler serves the agent's API (container logs, pod stats, and the
// exec and port-forward WebSocket routes of stream.go) for the apiserver.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(agentService{newLogService(a.cfg.LogDir, a.cfg.Runtime, a.log), newStatsService(a.cfg.Runtime, a.log)}.handler())
	newStreamService(a.cfg.Runtime, a.log).register(mux)
	return mux
}

// Run runs the node's pods and keeps its status fresh until ctx ends. Call
// Register first. Containers keep running when Run returns; a new Run
// adopts them.
func (a *Agent) Run(ctx context.Context) error {
	hb := make(chan struct{})
	go func() {
		defer close(hb)
		a.heartbeat(ctx)
	}()
	defer func() { <-hb }()
	if a.services != nil {
		sl := make(chan struct{})
		go func() {
			defer close(sl)
			a.services.run(ctx)
		}()
		defer func() { <-sl }()
	}
	if a.events != nil {
		rec := make(chan struct{})
		go func() {
			defer close(rec)
			a.events.Run(ctx)
		}()
		defer func() { <-rec }()
	}

	workers := map[string]*podWorker{} // by pod uid; owned by this goroutine
	exited := make(chan string)
	defer func() {
		for _, w := range workers {
			<-w.done
		}
	}()
	// The PLEG wakes the workers whose containers changed; it sees them
	// through its registry, which this goroutine keeps equal to workers.
	pl := newPLEG(a)
	plDone := make(chan struct{})
	go func() {
		defer close(plDone)
		pl.run(ctx)
	}()
	defer func() { <-plDone }()
	dispatch := func(p *skiffv1.Pod, deleted bool) {
		uid := p.GetMetadata().GetUid()
		w, ok := workers[uid]
		if !ok {
			if deleted {
				return
			}
			w = newPodWorker(a, p)
			workers[uid] = w
			pl.register(uid, w)
			go func() {
				w.run(ctx)
				select {
				case exited <- uid:
				case <-ctx.Done():
				}
			}()
			return
		}
		w.update(p, deleted)
	}

	// rev is the newest version the pod watch has been through, from its
	// events and bookmarks; 0 when the agent must list first. A watch that
	// ends resumes from rev, so a quiet node whose stream breaks does not
	// list again; only a version the server no longer has (expired) does.
	var rev uint64
	first := true
	for ctx.Err() == nil {
		var err error
		if rev == 0 {
			rev, err = a.relist(ctx, workers, dispatch, first)
			if err == nil {
				first = false
			}
		}
		if err == nil {
			rev, err = a.watch(ctx, rev, dispatch, workers, exited, pl)
		}
		if ctx.Err() != nil {
			break
		}
		if connect.CodeOf(err) == connect.CodeOutOfRange {
			rev = 0 // expired (or ahead of this server): list again
			a.log.Warn("pod watch cannot resume; listing again", "err", err)
		} else {
			a.log.Warn("pod watch ended; resuming", "rv", rev, "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(a.timing.rewatch):
		}
	}
	return nil
}

// relist reconciles workers with the pods bound to this node and returns
// the revision to watch from. On the first list it also removes sandboxes
// whose pods are gone, left by an earlier run of the agent.
func (a *Agent) relist(ctx context.Context, workers map[string]*podWorker, dispatch func(*skiffv1.Pod, bool), first bool) (uint64, error) {
	res, err := a.cfg.Pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{FieldSelector: a.onNode()}))
	if err != nil {
		return 0, fmt.Errorf("list pods on node %s: %w", a.cfg.NodeName, err)
	}
	want := map[string]bool{}
	for _, p := range res.Msg.Items {
		want[p.GetMetadata().GetUid()] = true
		dispatch(p, false)
	}
	for uid, w := range workers {
		if !want[uid] {
			w.update(nil, true)
		}
	}
	if first {
		a.removeOrphans(ctx, want)
	}
	a.removeStaleDirs(ctx, func(uid string) bool { return want[uid] || workers[uid] != nil })
	return res.Msg.ResourceVersion, nil
}

// watch follows the pods bound to this node from rev until the watch ends,
// and returns the newest version it has been through: that of the last
// event or bookmark. The API writes one object per revision, so no event
// of that revision is still to come.
func (a *Agent) watch(ctx context.Context, rev uint64, dispatch func(*skiffv1.Pod, bool), workers map[string]*podWorker, exited chan string, pl *pleg) (uint64, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := a.cfg.Pods.Watch(wctx, connect.NewRequest(&skiffv1.WatchRequest{FieldSelector: a.onNode(), ResourceVersion: rev, AllowBookmarks: true}))
	if err != nil {
		return rev, fmt.Errorf("watch pods: %w", err)
	}
	events := make(chan *skiffv1.PodWatchEvent)
	recvErr := make(chan error, 1)
	go func() {
		defer close(events)
		for st.Receive() {
			select {
			case events <- st.Msg():
			case <-wctx.Done():
				return
			}
		}
		recvErr <- errors.Join(st.Err(), errors.New("watch closed by server"))
	}()
	for {
		select {
		case <-ctx.Done():
			return rev, nil
		case uid := <-exited:
			delete(workers, uid)
			pl.unregister(uid)
		case ev, ok := <-events:
			if !ok {
				select {
				case err := <-recvErr:
					return rev, err
				default:
					return rev, errors.New("watch closed")
				}
			}
			rev = max(rev, ev.GetObject().GetMetadata().GetResourceVersion())
			if ev.GetType() == skiffv1.EventType_EVENT_TYPE_BOOKMARK {
				continue
			}
			dispatch(ev.GetObject(), ev.GetType() == skiffv1.EventType_EVENT_TYPE_DELETED)
		}
	}
}

// onNode selects the pods bound to this node.
func (a *Agent) onNode() string { return "spec.nodeName=" + a.cfg.NodeName }

// removeOrphans stops and removes sandboxes this agent made for pods that
// are no longer bound here.
func (a *Agent) removeOrphans(ctx context.Context, want map[string]bool) {
	res, err := a.cfg.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		a.log.Warn("list sandboxes", "err", err)
		return
	}
	for _, sb := range res.Items {
		uid, ours := sb.GetLabels()[LabelPodUID]
		if !ours || want[uid] {
			continue
		}
		a.log.Info("removing sandbox of a pod that is gone", "sandbox", sb.Id, "pod", sb.GetLabels()[LabelPodNamespace]+"/"+sb.GetLabels()[LabelPodName])
		if _, err := a.cfg.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			a.log.Warn("stop sandbox", "sandbox", sb.Id, "err", err)
			continue
		}
		if _, err := a.cfg.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			a.log.Warn("remove sandbox", "sandbox", sb.Id, "err", err)
		}
	}
}
