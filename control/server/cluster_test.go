package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/cluster/pki"
	"skiff.dev/skiff/control/store"
)

// The tests of this file run clusters of three servers in this process,
// each with its own data directory, gossip port and Raft listener, and
// check what a user of the API sees through each server: forwarding to the
// leader, a partition of the leader, a server whose disk fails, a data
// directory of another cluster, and a race between a pod's creation and
// its namespace's deletion.

// TestClusterForwarding: any server answers any call. A namespace created
// through one follower is seen at once, at the same resourceVersion,
// through the other follower, even while that follower's state machine is
// held behind (its linearizable Get is answered by the leader); a stale
// Get there sees it once it catches up; an Update with a resourceVersion
// gone stale is a conflict, wherever it is sent.
func TestClusterForwarding(t *testing.T) {
	c := startCluster(t, 3)
	leader, fs := c.waitLeader(t)
	f1, f2 := fs[0], fs[1]
	ctx := testCtx(t)

	// f2 applies nothing until released: what it answers from its own
	// state lags the cluster.
	release := f2.holdApplies()
	defer release()
	created, err := f1.namespaces().Create(ctx, connect.NewRequest(namespace("fwd")))
	if err != nil {
		t.Fatalf("create a namespace through a follower: %v", err)
	}
	rv, uid := created.Msg.GetMetadata().GetResourceVersion(), created.Msg.GetMetadata().GetUid()
	if rv == 0 || uid == "" {
		t.Fatalf("created namespace has resourceVersion %d, uid %q", rv, uid)
	}
	got, err := f2.namespaces().Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: "fwd"}))
	if err != nil {
		t.Fatalf("linearizable get through the other follower, at once: %v", err)
	}
	if m := got.Msg.GetMetadata(); m.GetResourceVersion() != rv || m.GetUid() != uid {
		t.Errorf("get through the other follower: resourceVersion %d uid %s, want %d %s", m.GetResourceVersion(), m.GetUid(), rv, uid)
	}
	_, err = f2.namespaces().Get(ctx, stale(&skiffv1.GetRequest{Name: "fwd"}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("stale get on a follower whose state machine is held: %v, want NotFound (its own state lags)", err)
	}
	release()
	var staleGot *skiffv1.Namespace
	eventually(t, 10*time.Second, func() bool {
		r, err := f2.namespaces().Get(ctx, stale(&skiffv1.GetRequest{Name: "fwd"}))
		if err != nil {
			return false
		}
		staleGot = r.Msg
		return true
	}, func() string { return "a stale get on the follower does not see the namespace" })
	if m := staleGot.GetMetadata(); m.GetResourceVersion() != rv || m.GetUid() != uid {
		t.Errorf("stale get on the follower: resourceVersion %d uid %s, want %d %s", m.GetResourceVersion(), m.GetUid(), rv, uid)
	}

	// An update through f2 moves the resourceVersion on; one through f1
	// with the old resourceVersion is refused.
	upd := namespace("fwd")
	upd.Metadata.ResourceVersion = rv
	upd.Metadata.Labels = map[string]string{"by": "f2"}
	updated, err := f2.namespaces().Update(ctx, connect.NewRequest(upd))
	if err != nil {
		t.Fatalf("update through a follower: %v", err)
	}
	rv2 := updated.Msg.GetMetadata().GetResourceVersion()
	if rv2 <= rv {
		t.Fatalf("update: resourceVersion %d, want more than %d", rv2, rv)
	}
	old := namespace("fwd")
	old.Metadata.ResourceVersion = rv
	old.Metadata.Labels = map[string]string{"by": "f1"}
	_, err = f1.namespaces().Update(ctx, connect.NewRequest(old))
	if connect.CodeOf(err) != connect.CodeAborted || !strings.Contains(err.Error(), "has been modified") {
		t.Errorf("update through a follower with a stale resourceVersion: %v, want Aborted, modified", err)
	}
	got, err = leader.namespaces().Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: "fwd"}))
	if err != nil {
		t.Fatalf("get through the leader: %v", err)
	}
	if m := got.Msg.GetMetadata(); m.GetResourceVersion() != rv2 || m.GetLabels()["by"] != "f2" {
		t.Errorf("get through the leader after the conflict: resourceVersion %d labels %v, want %d by=f2", m.GetResourceVersion(), m.GetLabels(), rv2)
	}
}

// TestClusterPartition cuts the leader off from the other servers. Through
// it, a write and a linearizable read are Unavailable, and the write is
// not made; the other two elect a leader and take writes through either.
// Healed, the old leader catches up with what was written meanwhile and
// takes writes again.
func TestClusterPartition(t *testing.T) {
	c := startCluster(t, 3)
	old, fs := c.waitLeader(t)
	ctx := testCtx(t)
	if _, err := fs[0].namespaces().Create(ctx, connect.NewRequest(namespace("before"))); err != nil {
		t.Fatalf("create before the partition: %v", err)
	}

	cutAt := time.Now()
	old.cut.Store(true)
	// Through the cut-off leader, while the majority elects another.
	var writeErr, readErr error
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		_, writeErr = old.namespaces().Create(ctx, connect.NewRequest(namespace("lost")))
		_, readErr = old.namespaces().Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: "before"}))
	})

	// The majority elects a leader: a write through either follower
	// succeeds. A try answered "outcome unknown" may have been made, so
	// AlreadyExists on a later try counts.
	var lastErr error
	eventually(t, 15*time.Second, func() bool {
		_, lastErr = fs[0].namespaces().Create(ctx, connect.NewRequest(namespace("during-1")))
		return lastErr == nil || connect.CodeOf(lastErr) == connect.CodeAlreadyExists
	}, func() string { return fmt.Sprintf("the majority takes no write: %v", lastErr) })
	t.Logf("partition: the two servers left took a write %s after the leader was cut off", time.Since(cutAt).Round(time.Millisecond))
	wg.Wait()
	if connect.CodeOf(writeErr) != connect.CodeUnavailable {
		t.Errorf("create through the cut-off leader: %v, want Unavailable", writeErr)
	}
	if connect.CodeOf(readErr) != connect.CodeUnavailable {
		t.Errorf("linearizable get through the cut-off leader: %v, want Unavailable", readErr)
	}
	t.Logf("partition: through the cut-off leader, create: %v; get: %v", writeErr, readErr)
	if _, err := fs[1].namespaces().Create(ctx, connect.NewRequest(namespace("during-2"))); err != nil {
		t.Errorf("create through the other server of the majority: %v", err)
	}
	written := map[string]uint64{}
	for _, name := range []string{"during-1", "during-2"} {
		got, err := fs[1].namespaces().Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: name}))
		if err != nil {
			t.Fatalf("get %s through the majority: %v", name, err)
		}
		written[name] = got.Msg.GetMetadata().GetResourceVersion()
	}
	if _, err := old.namespaces().Get(ctx, stale(&skiffv1.GetRequest{Name: "during-1"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("stale get on the cut-off server of what the majority wrote: %v, want NotFound", err)
	}

	old.cut.Store(false)
	healedAt := time.Now()
	for name, rv := range written {
		var got uint64
		eventually(t, 15*time.Second, func() bool {
			r, err := old.namespaces().Get(ctx, stale(&skiffv1.GetRequest{Name: name}))
			if err != nil {
				return false
			}
			got = r.Msg.GetMetadata().GetResourceVersion()
			return true
		}, func() string { return fmt.Sprintf("the healed server does not see %s", name) })
		if got != rv {
			t.Errorf("stale get of %s on the healed server: resourceVersion %d, want %d", name, got, rv)
		}
	}
	eventually(t, 15*time.Second, func() bool {
		_, lastErr = old.namespaces().Create(ctx, connect.NewRequest(namespace("after")))
		return lastErr == nil || connect.CodeOf(lastErr) == connect.CodeAlreadyExists
	}, func() string { return fmt.Sprintf("the healed server takes no write: %v", lastErr) })
	t.Logf("partition: the healed server took a write %s after the partition healed", time.Since(healedAt).Round(time.Millisecond))
	for _, s := range c {
		if _, err := s.namespaces().Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: "after"})); err != nil {
			t.Errorf("get through %s of what the healed server wrote: %v", s.Addr(), err)
		}
	}
	// The cut-off leader could not commit the write it was sent.
	if _, err := fs[0].namespaces().Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: "lost"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("get of the write sent to the cut-off leader: %v, want NotFound", err)
	}
}

// TestClusterFailStopOnOne fails state.db on one server, as a full disk
// would: that server stops with an error naming its data directory, and
// the two others go on taking writes (after electing a leader, when the
// failed one led).
func TestClusterFailStopOnOne(t *testing.T) {
	for _, tt := range []struct {
		name   string
		leader bool
	}{
		{"a follower", false},
		{"the leader", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := startCluster(t, 3)
			leader, fs := c.waitLeader(t)
			victim, others := fs[0], []*testServer{leader, fs[1]}
			if tt.leader {
				victim, others = leader, fs
			}
			ctx := testCtx(t)

			victim.failing.Store(true)
			failedAt := time.Now()
			_, err := fs[1].namespaces().Create(ctx, connect.NewRequest(namespace("armed")))
			switch {
			case !tt.leader && err != nil:
				t.Errorf("create while a follower's disk fails: %v, want success (the leader and the other follower are a majority)", err)
			case tt.leader && connect.CodeOf(err) != connect.CodeUnavailable:
				t.Errorf("create while the leader's disk fails: %v, want Unavailable", err)
			}

			err = victim.waitRun(t, 20*time.Second)
			wantDir := filepath.Join(victim.dir, "server")
			if err == nil || !strings.Contains(err.Error(), wantDir) || !strings.Contains(err.Error(), "fail-stop") || !errors.Is(err, errInjected) {
				t.Errorf("Run of the failed server = %v, want an error naming %s, fail-stop and the cause", err, wantDir)
			}

			var lastErr error
			eventually(t, 15*time.Second, func() bool {
				_, lastErr = others[0].namespaces().Create(ctx, connect.NewRequest(namespace("after-1")))
				return lastErr == nil || connect.CodeOf(lastErr) == connect.CodeAlreadyExists
			}, func() string { return fmt.Sprintf("the two servers left take no write: %v", lastErr) })
			t.Logf("fail-stop of %s: the two servers left took a write %s after the failure", tt.name, time.Since(failedAt).Round(time.Millisecond))
			if _, err := others[1].namespaces().Create(ctx, connect.NewRequest(namespace("after-2"))); err != nil {
				t.Errorf("create through the other server left: %v", err)
			}
			for _, s := range others {
				for _, name := range []string{"after-1", "after-2"} {
					if _, err := s.namespaces().Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: name})); err != nil {
						t.Errorf("get %s through %s: %v", name, s.Addr(), err)
					}
				}
			}
		})
	}
}

// TestClusterJoinRefusesOtherCluster: a data directory that belongs to a
// cluster of its own cannot join another cluster; Run says so at once and
// the directory is left byte for byte as it was. A new server joins the
// cluster, is made a voter, and answers calls. The cluster of its own was
// started with the cluster's join token: without it, the two never meet
// (TestClusterJoinRefusesOtherToken).
func TestClusterJoinRefusesOtherCluster(t *testing.T) {
	c := startCluster(t, 3)
	leader, _ := c.waitLeader(t)
	ctx := testCtx(t)
	if _, err := leader.namespaces().Create(ctx, connect.NewRequest(namespace("shared"))); err != nil {
		t.Fatalf("create in the cluster: %v", err)
	}

	dir := t.TempDir()
	alone := startServer(t, Config{DataDir: dir, Listen: "127.0.0.1:0", Gossip: freeAddr(t), Token: c.token()})
	alone.waitReady(t)
	if _, err := alone.namespaces().Create(ctx, connect.NewRequest(namespace("mine"))); err != nil {
		t.Fatalf("create on a server of its own: %v", err)
	}
	if err := alone.stopAndWait(t); err != nil {
		t.Fatalf("Run of the server of its own: %v", err)
	}
	ownID, ownCluster, found, err := store.ReadIdentity(filepath.Join(dir, "server"))
	if err != nil || !found || ownCluster == "" {
		t.Fatalf("identity of the server of its own: %q %q %v %v", ownID, ownCluster, found, err)
	}
	_, theirCluster, _, err := store.ReadIdentity(filepath.Join(c[0].dir, "server"))
	if err != nil || theirCluster == "" || theirCluster == ownCluster {
		t.Fatalf("cluster ID of the cluster: %q (%v), the other's %q", theirCluster, err, ownCluster)
	}
	before := hashTree(t, dir)

	refused := startServer(t, Config{DataDir: dir, Listen: "127.0.0.1:0", Gossip: freeAddr(t), Join: []string{c[0].gossip}, Token: c.token()})
	refusedAt := time.Now()
	err = refused.waitRun(t, 10*time.Second)
	t.Logf("Run with a directory of another cluster returned after %s: %v", time.Since(refusedAt).Round(time.Millisecond), err)
	if err == nil || !strings.Contains(err.Error(), "cannot join") || !strings.Contains(err.Error(), ownCluster) || !strings.Contains(err.Error(), theirCluster) {
		t.Errorf("Run with a directory of another cluster = %v, want an error saying it cannot join, naming %s and %s", err, ownCluster, theirCluster)
	}
	if after := hashTree(t, dir); !maps.Equal(before, after) {
		t.Errorf("the refused server's data directory changed:\nbefore %v\nafter  %v", before, after)
	}

	// A new server, with an empty directory, joins.
	joiner := startServer(t, Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Gossip: freeAddr(t), Join: []string{c[0].gossip}, Token: c.token()})
	joiner.waitReady(t)
	all := append(slices.Clone(c), joiner)
	var last string
	eventually(t, 20*time.Second, func() bool {
		for _, s := range []*testServer{joiner, leader} {
			_, view, ok := s.membersView(ctx, all)
			if last = view; !ok {
				return false
			}
		}
		return true
	}, func() string { return "the new server is not a voter of the cluster: " + last })
	ms, err := leader.clusterAPI().Members(ctx, connect.NewRequest(&skiffv1.MembersRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms.Msg.GetMembers() {
		if m.GetName() == ownID {
			t.Errorf("the refused server is a member of the cluster: %v", m)
		}
	}
	got, err := joiner.namespaces().Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: "shared"}))
	if err != nil || got.Msg.GetMetadata().GetName() != "shared" {
		t.Errorf("get through the new server: %v", err)
	}
	if _, err := joiner.namespaces().Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: "mine"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("get through the new server of the other cluster's namespace: %v, want NotFound", err)
	}
	if _, err := joiner.namespaces().Create(ctx, connect.NewRequest(namespace("joined"))); err != nil {
		t.Errorf("create through the new server: %v", err)
	}
	eventually(t, 10*time.Second, func() bool {
		_, err := joiner.namespaces().Get(ctx, stale(&skiffv1.GetRequest{Name: "joined"}))
		return err == nil
	}, func() string { return "a stale get on the new server does not see what it wrote" })
}

// TestClusterJoinRefusesOtherToken: a server whose join token is not the
// cluster's cannot join it. Its gossip, keyed by its token, never meets the
// cluster's: Run keeps trying, as with peers not up yet, and writes nothing
// to its data directory; the cluster's members stay as they were; stopped,
// Run says it could not join the gossip pool. A directory given a token
// other than the one it kept is refused at once, unchanged.
func TestClusterJoinRefusesOtherToken(t *testing.T) {
	c := startCluster(t, 3)
	c.waitLeader(t)
	ctx := testCtx(t)
	want := c.memberNames(t, ctx)

	// ownDir is a directory of a cluster of its own, which made and kept
	// its own token.
	ownDir := t.TempDir()
	alone := startServer(t, Config{DataDir: ownDir, Listen: "127.0.0.1:0", Gossip: freeAddr(t)})
	alone.waitReady(t)
	ownToken := alone.JoinToken()
	if ownToken == c.token() {
		t.Fatal("a server of its own has the cluster's join token")
	}
	if err := alone.stopAndWait(t); err != nil {
		t.Fatalf("Run of the server of its own: %v", err)
	}

	for _, tt := range []struct {
		name  string
		dir   string
		token string // "": the one kept in dir
	}{
		{"an empty directory with another token", t.TempDir(), pki.NewToken()},
		{"a directory of a cluster of its own, with its own token", ownDir, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := files(t, tt.dir)
			s := startServer(t, Config{
				DataDir: tt.dir, Listen: "127.0.0.1:0", Gossip: freeAddr(t), Join: []string{c[0].gossip}, Token: tt.token,
			})
			// The pool's members gossip under another key: refused at once,
			// naming the token.
			err := s.waitRun(t, 15*time.Second)
			if err == nil || !strings.Contains(err.Error(), "cannot join") || !strings.Contains(err.Error(), "the join token is not their cluster's (check --token)") {
				t.Errorf("Run with another join token = %v, want a refusal naming the token", err)
			}
			if after := files(t, tt.dir); !maps.Equal(before, after) {
				t.Errorf("the data directory of a server with another join token changed:\nbefore %v\nafter  %v", before, after)
			}
			if got := c.memberNames(t, ctx); !slices.Equal(got, want) {
				t.Errorf("the cluster's members: %v, want %v as before", got, want)
			}
		})
	}

	t.Run("a directory given a token other than the one it kept", func(t *testing.T) {
		before := files(t, ownDir)
		s := startServer(t, Config{DataDir: ownDir, Listen: "127.0.0.1:0", Gossip: freeAddr(t), Join: []string{c[0].gossip}, Token: c.token()})
		err := s.waitRun(t, 10*time.Second)
		if err == nil || !strings.Contains(err.Error(), "join token: differs") || !strings.Contains(err.Error(), tokenPath(ownDir)) {
			t.Errorf("Run with a token other than the kept one = %v, want an error saying it differs from the one kept in %s", err, tokenPath(ownDir))
		}
		if after := files(t, ownDir); !maps.Equal(before, after) {
			t.Errorf("the data directory changed:\nbefore %v\nafter  %v", before, after)
		}
		if got := c.memberNames(t, ctx); !slices.Equal(got, want) {
			t.Errorf("the cluster's members: %v, want %v as before", got, want)
		}
	})
}

// TestClusterForwardedRefusal: a call that a follower forwards and the
// leader refuses before reading its body (here an unknown bearer token) is
// answered in full, Unauthenticated, even though the client stops sending
// its body once it sees the refusal, as Go's HTTP/2 client does on any
// status above 299. The client's body is a pipe that is never written:
// the answer must not wait for it.
func TestClusterForwardedRefusal(t *testing.T) {
	c := startCluster(t, 3)
	_, fs := c.waitLeader(t)
	f := fs[0]
	// Bounded well below the server's read timeout (serve.DefaultLimits):
	// a follower that waits for the body answers only when that passes.
	ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
	defer cancel()
	body, never := io.Pipe()
	defer never.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.base()+skiffv1connect.NamespaceServiceCreateProcedure, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connect-Protocol-Version", "1")
	req.Header.Set("Authorization", "Bearer aaaaaaaaaaaa.notthesecret")
	res, err := (&http.Client{Transport: apiTransport(t, f.Server)}).Do(req)
	if err != nil {
		t.Fatalf("create through a follower with an unknown token: %v", err)
	}
	defer res.Body.Close()
	if res.ProtoMajor != 2 {
		t.Fatalf("create through a follower: %s, want HTTP/2", res.Proto)
	}
	got, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("create through a follower with an unknown token: status %d, reading its answer: %v (the follower waits for the body the client no longer sends)", res.StatusCode, err)
	}
	if res.StatusCode != http.StatusUnauthorized || !strings.Contains(string(got), "unauthenticated") {
		t.Errorf("create through a follower with an unknown token: %d %s, want 401 unauthenticated", res.StatusCode, got)
	}
}

// TestClusterPodNamespaceRace races, round after round, the creation of a
// pod in a new namespace through one follower with the deletion of that
// namespace through the other. The deletion always succeeds (it marks the
// namespace Terminating); the pod is either created before that, and then
// deleted by the namespace controller, or refused with a clear error. In
// the end every namespace is gone and no pod is left.
func TestClusterPodNamespaceRace(t *testing.T) {
	const rounds = 200
	c := startCluster(t, 3)
	leader, fs := c.waitLeader(t)
	ctx := testCtx(t)

	outcomes := map[string]int{}
	moved := 0 // rounds whose outcome a leadership change hid
	for i := range rounds {
		ns := fmt.Sprintf("race-%d", i)
		a, b := fs[i%2], fs[(i+1)%2]
		// A leadership change (a slow machine misses heartbeats) answers
		// Unavailable: try again, as a client would.
		var err error
		eventually(t, 10*time.Second, func() bool {
			_, err = a.namespaces().Create(ctx, connect.NewRequest(namespace(ns)))
			return connect.CodeOf(err) != connect.CodeUnavailable
		}, func() string { return fmt.Sprintf("round %d: create namespace: %v", i, err) })
		if err != nil && connect.CodeOf(err) != connect.CodeAlreadyExists {
			t.Fatalf("round %d: create namespace: %v", i, err)
		}
		pod := testPod("p")
		pod.Metadata.Namespace = ns
		var podErr, delErr error
		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			<-start
			_, podErr = a.pods().Create(ctx, connect.NewRequest(pod))
		})
		wg.Go(func() {
			<-start
			_, delErr = b.namespaces().Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: ns}))
		})
		close(start)
		wg.Wait()
		switch {
		case connect.CodeOf(podErr) == connect.CodeUnavailable || connect.CodeOf(delErr) == connect.CodeUnavailable:
			// Leadership moved mid-round ("outcome unknown", "not the
			// leader"): the round proves nothing, the final check below
			// still holds every namespace to what the store says.
			moved++
			t.Logf("round %d: leadership moved: create pod: %v; delete namespace: %v", i, podErr, delErr)
		case delErr != nil:
			t.Errorf("round %d: delete namespace: %v", i, delErr)
		case podErr == nil:
			outcomes["pod created, then the namespace marked"]++
		case connect.CodeOf(podErr) == connect.CodePermissionDenied && strings.Contains(podErr.Error(), fmt.Sprintf("unable to create new content in namespace %s because it is being terminated", ns)):
			outcomes["namespace marked, pod refused"]++
		default:
			t.Errorf("round %d: create of a pod in a namespace being deleted: %v, want PermissionDenied being terminated", i, podErr)
		}
	}
	t.Logf("%d rounds: %v, leadership moved in %d", rounds, outcomes, moved)
	if moved > rounds/10 {
		t.Errorf("leadership moved in %d of %d rounds: the race was hardly run", moved, rounds)
	}
	leader, _ = c.waitLeader(t)

	left := func() string {
		var out []string
		nsList, err := leader.namespaces().List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
		if err != nil {
			return err.Error()
		}
		for _, n := range nsList.Msg.GetItems() {
			if strings.HasPrefix(n.GetMetadata().GetName(), "race-") {
				out = append(out, "namespace/"+n.GetMetadata().GetName())
			}
		}
		podList, err := leader.pods().List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
		if err != nil {
			return err.Error()
		}
		for _, p := range podList.Msg.GetItems() {
			out = append(out, "pod/"+p.GetMetadata().GetNamespace()+"/"+p.GetMetadata().GetName())
		}
		return strings.Join(out, " ")
	}
	eventually(t, 30*time.Second, func() bool { return left() == "" },
		func() string { return fmt.Sprintf("left after the namespaces' deletion: %s", left()) })
}

// TestClusterRestartWithoutJoin: a server restarted with its data
// directory but no --join (alone in its gossip pool) is found again by
// the others, which keep trying the gossip addresses of Raft servers they
// saw go, and it answers calls again, its new Raft port included.
func TestClusterRestartWithoutJoin(t *testing.T) {
	c := startCluster(t, 3)
	leader, followers := c.waitLeader(t)
	f := followers[0]
	if err := f.stopAndWait(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
	back := startServer(t, Config{DataDir: f.dir, Listen: "127.0.0.1:0", Gossip: f.gossip, RaftListen: "127.0.0.1:0"})
	back.waitReady(t)
	ctx := testCtx(t)
	var err error
	eventually(t, 40*time.Second, func() bool {
		_, err = back.namespaces().Create(ctx, connect.NewRequest(namespace("after-restart")))
		return err == nil
	}, func() string { return "a create through the server restarted without --join: " + fmt.Sprint(err) })
	// Every server sees all three again, with one leader.
	testCluster{back, followers[1], leader}.waitLeader(t)
}
