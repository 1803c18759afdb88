package cri

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// eventBuffer bounds the events queued for one GetContainerEvents
// subscriber. A subscriber that lets it fill is dropped: its stream ends
// with ResourceExhausted, and it must list again (the kubelet relists), so
// that a slow client never holds up a container's exit.
const eventBuffer = 1024

// maxSubscribers bounds the GetContainerEvents streams open at once.
const maxSubscribers = 64

// errSubscriberBehind ends the stream of a subscriber that fell behind.
var errSubscriberBehind = errors.New("container events: the subscriber fell behind and was dropped; list again and resubscribe")

// eventHub fans container events out to subscribers. Publishing never
// blocks: each subscriber has a bounded queue. Its zero value is ready.
type eventHub struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
}

type subscriber struct {
	ch      chan *runtime.ContainerEventResponse
	dropped chan struct{} // closed when the hub drops the subscriber
}

func (h *eventHub) subscribe() (*subscriber, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) >= maxSubscribers {
		return nil, status.Errorf(codes.ResourceExhausted, "get container events: %d container event streams are open already", maxSubscribers)
	}
	if h.subs == nil {
		h.subs = map[*subscriber]struct{}{}
	}
	sub := &subscriber{ch: make(chan *runtime.ContainerEventResponse, eventBuffer), dropped: make(chan struct{})}
	h.subs[sub] = struct{}{}
	return sub, nil
}

func (h *eventHub) unsubscribe(sub *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, sub)
}

// publish queues ev for every subscriber, dropping those whose queue is
// full. Subscribers see events in the order they were published.
func (h *eventHub) publish(ev *runtime.ContainerEventResponse) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs {
		select {
		case sub.ch <- ev:
		default:
			delete(h.subs, sub)
			close(sub.dropped)
		}
	}
}

// active reports whether anyone listens, so that events nobody reads are
// not built.
func (h *eventHub) active() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs) > 0
}

// GetContainerEvents streams container events (created, started, stopped,
// deleted) as they happen, each with the status of its pod sandbox and of
// the sandbox's containers, until the client goes or the server closes.
// Events before the call are not replayed: list after the stream's header
// has arrived, which marks the subscription. A client that does
// not keep up (eventBuffer events behind) is dropped with
// ResourceExhausted.
func (s *service) GetContainerEvents(req *runtime.GetEventsRequest, stream runtime.RuntimeService_GetContainerEventsServer) error {
	sub, err := s.events.subscribe()
	if err != nil {
		return err
	}
	defer s.events.unsubscribe(sub)
	// The header tells the client it is subscribed: events from now on
	// reach it.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	ctx := stream.Context()
	for {
		select {
		case ev := <-sub.ch:
			if err := stream.Send(ev); err != nil {
				return err
			}
		case <-sub.dropped:
			return status.Error(codes.ResourceExhausted, errSubscriberBehind.Error())
		case <-ctx.Done():
			return nil
		case <-s.closing:
			return toStatus(fmt.Errorf("%w: the CRI server is shutting down", errUnavailable))
		}
	}
}

// emit publishes an event about container id of sandbox sandboxID. The
// caller must hold no container or sandbox lock: the event carries the
// sandbox's status and those of its containers.
func (s *service) emit(typ runtime.ContainerEventType, id, sandboxID string) {
	if !s.events.active() {
		return
	}
	ctx := context.Background()
	ev := &runtime.ContainerEventResponse{ContainerId: id, ContainerEventType: typ, CreatedAt: s.now().UnixNano()}
	if st, err := s.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: sandboxID}); err == nil {
		ev.PodSandboxStatus = st.GetStatus()
	}
	for _, c := range s.containersOf(sandboxID) {
		if st, err := s.ContainerStatus(ctx, &runtime.ContainerStatusRequest{ContainerId: c.rec.ID}); err == nil {
			ev.ContainersStatuses = append(ev.ContainersStatuses, st.GetStatus())
		}
	}
	s.events.publish(ev)
}
