package agent

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// relistTimeout bounds one relist's ListContainers call.
const relistTimeout = 10 * time.Second

// pleg is the agent's pod lifecycle event generator, as the kubelet's
// evented PLEG: it follows the CRI server's container events and wakes the
// worker of the pod concerned at once, so that no worker polls its
// containers. A slow relist (timing.relist) compares the container list
// with the previous one and wakes the workers whose containers changed: it
// is the safety net for events lost while the stream was down, and it runs
// at once whenever the stream (re)opens or breaks.
//
// One goroutine (run) owns the event stream and the relist state; the
// registry of workers is shared with the Run goroutine, which keeps it.
type pleg struct {
	a *Agent

	mu      sync.Mutex
	workers map[string]*podWorker // by pod uid

	// Owned by run.
	seen map[string]containerSeen // by container ID, at the last relist
}

type containerSeen struct {
	uid   string
	state runtimeapi.ContainerState
}

func newPLEG(a *Agent) *pleg {
	return &pleg{a: a, workers: map[string]*podWorker{}, seen: map[string]containerSeen{}}
}

func (p *pleg) register(uid string, w *podWorker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.workers[uid] = w
}

func (p *pleg) unregister(uid string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.workers, uid)
}

// wake wakes the worker of pod uid, if there is one. It never blocks.
func (p *pleg) wake(uid string) {
	p.mu.Lock()
	w := p.workers[uid]
	p.mu.Unlock()
	if w != nil {
		w.poke()
	}
}

// streamEvent is what the receiving goroutine hands run: an event, the
// news that the stream is open, or its end.
type streamEvent struct {
	ev     *runtimeapi.ContainerEventResponse
	opened bool
	err    error
}

// run follows the event stream and relists until ctx ends.
func (p *pleg) run(ctx context.Context) {
	log := p.a.log
	relist := time.NewTicker(p.a.timing.relist)
	defer relist.Stop()
	in := make(chan streamEvent)
	var recv sync.WaitGroup
	defer recv.Wait()
	subscribe := func() {
		recv.Add(1)
		go func() {
			defer recv.Done()
			p.receive(ctx, in)
		}()
	}
	subscribe()
	backoff := p.a.timing.resubscribe
	var lastGC time.Time       // of the last collection of stale pod directories
	var again <-chan time.Time // when to subscribe again; nil while subscribed
	for {
		select {
		case <-ctx.Done():
			return
		case <-relist.C:
			p.relist(ctx)
			if time.Since(lastGC) >= p.a.timing.relist {
				lastGC = time.Now()
				p.collectDirs(ctx)
			}
		case <-again:
			again = nil
			subscribe()
		case se := <-in:
			switch {
			case se.ev != nil:
				p.wake(se.ev.GetPodSandboxStatus().GetMetadata().GetUid())
			case se.opened:
				backoff = p.a.timing.resubscribe
				p.relist(ctx) // what changed before the stream opened
			default:
				if ctx.Err() != nil {
					return
				}
				if status.Code(se.err) == codes.Unimplemented {
					// A runtime without events: relist often instead, as
					// the kubelet's generic PLEG does, and ask no more.
					log.Warn("the CRI runtime sends no container events; relisting every second", "err", se.err)
					relist.Reset(p.a.timing.fallbackRelist)
					p.relist(ctx)
					continue
				}
				log.Warn("container event stream ended; relisting and subscribing again", "in", backoff, "err", se.err)
				p.relist(ctx)
				again = time.After(backoff)
				backoff = min(2*backoff, p.a.timing.resubscribeMax)
			}
		}
	}
}

// receive opens the event stream and hands run what it reads, ending with
// the stream's error.
func (p *pleg) receive(ctx context.Context, in chan<- streamEvent) {
	send := func(se streamEvent) bool {
		select {
		case in <- se:
			return true
		case <-ctx.Done():
			return false
		}
	}
	st, err := p.a.cfg.Runtime.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err == nil {
		_, err = st.Header() // the server has subscribed us
	}
	if err != nil {
		send(streamEvent{err: err})
		return
	}
	if !send(streamEvent{opened: true}) {
		return
	}
	for {
		ev, err := st.Recv()
		if err != nil {
			send(streamEvent{err: err})
			return
		}
		if !send(streamEvent{ev: ev}) {
			return
		}
	}
}

// relist lists the node's containers and wakes the workers of those that
// appeared, changed state or went since the last relist.
func (p *pleg) relist(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, relistTimeout)
	defer cancel()
	res, err := p.a.cfg.Runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		if ctx.Err() == nil {
			p.a.log.Warn("relist containers", "err", err)
		}
		return
	}
	now := make(map[string]containerSeen, len(res.Containers))
	for _, c := range res.Containers {
		uid, ok := c.GetLabels()[LabelPodUID]
		if !ok {
			continue // not the agent's
		}
		cs := containerSeen{uid: uid, state: c.GetState()}
		now[c.GetId()] = cs
		if p.seen[c.GetId()] != cs {
			p.wake(uid)
		}
	}
	for id, cs := range p.seen {
		if _, ok := now[id]; !ok {
			p.wake(cs.uid)
		}
	}
	p.seen = now
}
