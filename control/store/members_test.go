package store

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// testCluster opens n stores as one cluster on loopback, each with a
// switch that cuts it off from the others, and bootstraps them together.
func testCluster(t *testing.T, n int) ([]*Store, []*atomic.Bool) {
	t.Helper()
	cut := make([]*atomic.Bool, n)
	lns := make([]net.Listener, n)
	var servers []RaftServer
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i], cut[i] = ln, new(atomic.Bool)
		servers = append(servers, RaftServer{ID: NewServerID(), Address: ln.Addr().String()})
	}
	stores := make([]*Store, n)
	for i := range n {
		c := cut[i]
		s := openTest(t, "", func(cfg *Config) {
			cfg.Cluster, cfg.Listener, cfg.ServerID = true, lns[i], servers[i].ID
			cfg.NetworkHookForTesting = func() error {
				if c.Load() {
					return errors.New("cut off by the test")
				}
				return nil
			}
		})
		if s.ClusterID() != "" {
			t.Fatalf("a new server of several has cluster ID %q before it bootstraps", s.ClusterID())
		}
		stores[i] = s
	}
	for _, s := range stores {
		if err := s.Bootstrap(servers); err != nil {
			t.Fatal(err)
		}
	}
	return stores, cut
}

// leaderOf waits, on the stores' leadership channels, until one of stores
// leads and returns its index.
func leaderOf(t *testing.T, stores []*Store) int {
	t.Helper()
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	type lead struct {
		i  int
		is bool
	}
	got := make(chan lead)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for i, s := range stores {
		ch := s.LeaderCh()
		wg.Go(func() {
			for {
				select {
				case v, ok := <-ch:
					if !ok {
						return
					}
					select {
					case got <- lead{i, v}:
					case <-ctx.Done():
						return
					}
				case <-ctx.Done():
					return
				}
			}
		})
	}
	for {
		select {
		case l := <-got:
			if l.is && stores[l.i].IsLeader() {
				return l.i
			}
		case <-ctx.Done():
			t.Fatal("no leader elected")
		}
	}
}

// TestClusterPartition: three servers bootstrapped together share one
// cluster ID and elect one leader; a leader cut off from the other two
// steps down, refuses writes and linearizable reads, and the two elect a
// new leader that takes writes; healed, the old leader catches up.
func TestClusterPartition(t *testing.T) {
	stores, cut := testCluster(t, 3)
	ctx := testCtx(t)
	for _, s := range stores[1:] {
		if s.ClusterID() == "" || s.ClusterID() != stores[0].ClusterID() {
			t.Fatalf("cluster IDs differ: %q and %q", stores[0].ClusterID(), s.ClusterID())
		}
	}
	l := leaderOf(t, stores)
	old := stores[l]
	kv := mustCreate(t, old, "/a", "1")
	if err := old.LinearizableRead(ctx); err != nil {
		t.Fatalf("linearizable read on the leader: %v", err)
	}
	for i, s := range stores {
		if i != l {
			if err := s.LinearizableRead(ctx); !errors.Is(err, ErrNotLeader) {
				t.Fatalf("linearizable read on a follower: got %v, want ErrNotLeader", err)
			}
		}
	}

	lost := old.LeaderCh()
	cut[l].Store(true)
	for v := range lost {
		if !v {
			break
		}
	}
	if err := old.LinearizableRead(ctx); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("linearizable read on the cut-off server: got %v, want ErrNotLeader", err)
	}
	if _, err := old.Create(ctx, "/b", []byte("x")); err == nil {
		t.Fatal("the cut-off server accepted a write")
	}
	rest := append(append([]*Store{}, stores[:l]...), stores[l+1:]...)
	nl := rest[leaderOf(t, rest)]
	kv2 := mustCreate(t, nl, "/c", "2")
	if err := nl.LinearizableRead(ctx); err != nil {
		t.Fatalf("linearizable read on the new leader: %v", err)
	}

	cut[l].Store(false)
	ch, err := old.Watch(ctx, "/", kv.ModRevision)
	if err != nil {
		t.Fatalf("watch on the healed server from rv %d: %v", kv.ModRevision, err)
	}
	for ev := range ch {
		if ev.KV.Key == "/b" {
			t.Fatal("the write refused by the cut-off server was applied")
		}
		if ev.KV.Key == "/c" {
			if ev.Revision != kv2.ModRevision {
				t.Fatalf("/c at rv %d on the healed server, %d on the leader", ev.Revision, kv2.ModRevision)
			}
			return
		}
	}
	t.Fatal("watch ended before the healed server caught up")
}

// TestBootstrapRefusesOthers: a bootstrap must include this server and
// needs a store that has not bootstrapped itself; a directory of one
// cluster does not adopt another.
func TestBootstrapRefusesOthers(t *testing.T) {
	stores, _ := testCluster(t, 1)
	if err := stores[0].Bootstrap([]RaftServer{{ID: "server-other", Address: "127.0.0.1:1"}}); err == nil {
		t.Fatal("bootstrap without this server: no error")
	}
	single := openTest(t, "", nil)
	if err := single.Bootstrap([]RaftServer{{ID: single.ServerID(), Address: single.RaftAddr()}}); err == nil {
		t.Fatal("bootstrap of a store that bootstrapped itself: no error")
	}
	if err := single.AdoptCluster("cluster-other"); err == nil {
		t.Fatal("a store of one cluster adopted another")
	}
}
