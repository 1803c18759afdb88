package store

import (
	"sync"

	"github.com/hashicorp/raft"
)

// LeaderCh returns a new channel that carries this server's leadership: the
// current state at once, then each change (true = became leader, false =
// lost it). Leader-only loops (scheduler, controllers) start on true and stop
// on false. Each call gets its own channel, so several loops can follow
// leadership; the channel is closed by Close, which a loop treats as "stop".
//
// The channel holds only the latest state (buffer of one, newer values
// replace unread ones): a slow reader may miss a brief loss and regain of
// leadership and see true twice. Loops must therefore be safe to run twice
// briefly, as ARCHITECTURE.md rule 7 already requires.
func (s *Store) LeaderCh() <-chan bool {
	return s.leader.subscribe()
}

// IsLeader reports whether this server is the Raft leader now.
func (s *Store) IsLeader() bool {
	return s.raft.State() == raft.Leader
}

// leaderFeed broadcasts leadership to LeaderCh subscribers. Its owner
// goroutine (followLeadership) is the only writer of its state.
type leaderFeed struct {
	mu     sync.Mutex
	leader bool
	subs   []chan bool
	closed bool
}

func (l *leaderFeed) subscribe() <-chan bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	ch := make(chan bool, 1)
	if l.closed {
		close(ch)
		return ch
	}
	ch <- l.leader
	l.subs = append(l.subs, ch)
	return ch
}

func (l *leaderFeed) set(v bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || v == l.leader {
		return
	}
	l.leader = v
	for _, ch := range l.subs {
		// Replace an unread value. Only this method sends, under mu, so after
		// the drain there is room and the send cannot block.
		select {
		case <-ch:
		default:
		}
		ch <- v
	}
}

func (l *leaderFeed) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	for _, ch := range l.subs {
		close(ch)
	}
	l.subs = nil
}

// followLeadership is the owner goroutine of s.leader: it relays raft's
// single-consumer leader channel to every subscriber until the Store closes.
func (s *Store) followLeadership(raftCh <-chan bool) {
	defer s.bg.Done()
	defer s.leader.close()
	for {
		select {
		case v := <-raftCh:
			s.log.Info("store: leadership changed", "leader", v)
			epoch := s.reads.shut()
			if v {
				s.bg.Add(1)
				go s.gainedLeadership(epoch)
			}
			s.leader.set(v)
		case <-s.done:
			return
		}
	}
}
