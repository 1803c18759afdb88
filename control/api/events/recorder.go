// Package events records Events about API objects for the control loops
// and agents that act on them, as Kubernetes' event recorder does: each
// report goes through the API as an Event object, and a repeat of the same
// event (same object, reason, message and source) raises the count of the
// one object instead of adding another.
//
// Recording never blocks its caller: reports queue (boundedly) for one
// goroutine that writes them; when the queue is full a report is dropped
// and counted, since events are for people, not for correctness.
package events

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
)

// Event types.
const (
	Normal  = "Normal"
	Warning = "Warning"
)

// queueLength bounds the reports waiting to be written.
const queueLength = 1024

// Default write rate, as the kubelet's --event-qps and --event-burst: events
// are for people, and a burst of pods must not spend the store on them.
const (
	DefaultQPS   = 50
	DefaultBurst = 100
)

// Config is what NewRecorder needs.
type Config struct {
	Events skiffv1connect.EventServiceClient
	// Component names the reporter: "scheduler", "agent".
	Component string
	// Host is the reporting node, for an agent.
	Host   string
	Logger *slog.Logger
	// Now is the clock for event times; time.Now when nil.
	Now func() time.Time
	// QPS and Burst bound how fast events are written (DefaultQPS and
	// DefaultBurst when zero); reports beyond wait in the queue.
	QPS, Burst float64
}

// Recorder writes events. Record may be called from any goroutine; Run
// writes them until its context ends.
type Recorder struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	queue   chan *skiffv1.Event
	dropped atomic.Uint64
}

// NewRecorder returns a Recorder; call Run to write what it records.
func NewRecorder(cfg Config) *Recorder {
	r := &Recorder{cfg: cfg, log: cfg.Logger, now: cfg.Now, queue: make(chan *skiffv1.Event, queueLength)}
	if r.cfg.QPS <= 0 {
		r.cfg.QPS = DefaultQPS
	}
	if r.cfg.Burst < 1 {
		r.cfg.Burst = DefaultBurst
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	return r
}

// Record reports that something happened to obj. typ is Normal or Warning,
// reason a CamelCase word ("Scheduled").
func (r *Recorder) Record(obj kinds.Object, typ, reason, format string, args ...any) {
	if r == nil {
		return
	}
	if len(r.queue) == cap(r.queue) {
		r.drop() // before any work: a burst of reports costs next to nothing
		return
	}
	k, ok := kinds.Of(obj)
	if !ok {
		return
	}
	m := obj.GetMetadata()
	msg := fmt.Sprintf(format, args...)
	if len(msg) > 1024 {
		// Cut at a character boundary: proto refuses invalid UTF-8.
		cut := 1021
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "..."
	}
	ns := m.GetNamespace()
	if ns == "" {
		ns = "default" // events about cluster-scoped objects, as in Kubernetes
	}
	now := timestamppb.New(r.now())
	e := &skiffv1.Event{
		Metadata: &skiffv1.ObjectMeta{Namespace: ns},
		InvolvedObject: &skiffv1.ObjectReference{
			Kind: k.Kind, ApiVersion: k.APIVersion(), Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid(),
		},
		Reason: reason, Message: msg, Type: typ, Count: 1,
		FirstTimestamp: now, LastTimestamp: now,
		Source: &skiffv1.EventSource{Component: r.cfg.Component, Host: r.cfg.Host},
	}
	e.Metadata.Name = name(e)
	select {
	case r.queue <- e:
	default:
		r.drop()
	}
}

// drop counts a report left out because the queue is full.
func (r *Recorder) drop() {
	if n := r.dropped.Add(1); n == 1 || n%1000 == 0 {
		r.log.Warn("event queue full; dropping events", "dropped", n)
	}
}

// name is the same for repeats of one event, so that they meet in one
// object: the object's name and a digest of what identifies the event.
func name(e *skiffv1.Event) string {
	h := sha256.New()
	for _, s := range []string{e.InvolvedObject.Uid, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message, e.Type, e.Source.Component, e.Source.Host} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	base := e.InvolvedObject.Name
	if len(base) > 200 {
		base = base[:200]
	}
	return base + "." + hex.EncodeToString(h.Sum(nil))[:16]
}

// Run writes recorded events until ctx ends, at most QPS a second after a
// burst of Burst.
func (r *Recorder) Run(ctx context.Context) {
	tokens, last := r.cfg.Burst, time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-r.queue:
			now := time.Now()
			tokens = min(r.cfg.Burst, tokens+now.Sub(last).Seconds()*r.cfg.QPS)
			last = now
			if tokens < 1 {
				wait := time.NewTimer(time.Duration((1 - tokens) / r.cfg.QPS * float64(time.Second)))
				select {
				case <-ctx.Done():
					wait.Stop()
					return
				case <-wait.C:
				}
				tokens, last = 1, time.Now()
			}
			tokens--
			if err := r.write(ctx, e); err != nil && ctx.Err() == nil {
				r.log.Debug("write event", "reason", e.Reason, "object", e.InvolvedObject.Name, "err", err)
			}
		}
	}
}

// write creates the event, or raises the count of its earlier occurrence.
func (r *Recorder) write(ctx context.Context, e *skiffv1.Event) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := r.cfg.Events.Create(ctx, connect.NewRequest(e))
	if connect.CodeOf(err) != connect.CodeAlreadyExists {
		return err
	}
	for try := 0; try < 4; try++ {
		res, err := r.cfg.Events.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Namespace: e.Metadata.Namespace, Name: e.Metadata.Name}))
		if err != nil {
			return err
		}
		cur := res.Msg
		cur.Count++
		cur.LastTimestamp = e.LastTimestamp
		_, err = r.cfg.Events.Update(ctx, connect.NewRequest(cur))
		if connect.CodeOf(err) != connect.CodeAborted {
			return err
		}
	}
	return nil
}
