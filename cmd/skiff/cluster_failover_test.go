package main

import (
	"fmt"
	"testing"
	"time"
)

// failoverBound is how soon after the leader dies writes must succeed
// again: an election takes a few hundred milliseconds (200ms heartbeat and
// election timeouts), plus the time for clients to be refused by the dead
// server and forwarded to the new leader.
const failoverBound = 5 * time.Second

// TestClusterFailover kills the leader of three servers with SIGKILL under
// a steady write load: writes succeed again through the other two within
// failoverBound, no acknowledged write is lost or changed, none is written
// twice, and the killed server, restarted on its data, catches up with the
// leader.
func TestClusterFailover(t *testing.T) {
	c := startServers(t)
	load := startLoad(c, 4, "load")
	started := time.Now()
	eventually(t, 20*time.Second, func() bool { return load.ackedAfter(started) >= 20 },
		func() string { return "the load did not get going: " + load.summary() })

	leader := c.leader()
	leader.kill()
	t.Logf("killed the leader %s (api %s) with SIGKILL after %d acknowledged writes", leader.name, leader.api, load.ackedAfter(started))
	var first ackedWrite
	eventually(t, 20*time.Second, func() bool {
		var ok bool
		first, ok = load.firstStartedAfter(leader.killAt)
		return ok
	}, func() string { return "no write succeeded after the leader was killed: " + load.summary() })
	failover := first.end.Sub(leader.killAt)
	// Keep the load going a while on the two left, then stop it.
	eventually(t, 20*time.Second, func() bool {
		return time.Since(first.end) >= 2*time.Second && load.ackedAfter(first.end) >= 20
	}, func() string { return "writes did not keep succeeding after the failover: " + load.summary() })
	load.stop()
	gap := load.longestGap(leader.killAt.Add(-time.Second), first.end.Add(time.Second))
	t.Logf("failover: writes succeeded again %v after kill -9 of the leader (first: %s at rv %d); the longest gap between acknowledged writes from 1s before the kill to 1s after that was %v",
		failover.Round(time.Millisecond), first.name, first.rv, gap.Round(time.Millisecond))
	t.Logf("load: %s", load.summary())
	if failover > failoverBound {
		t.Errorf("writes succeeded again %v after the leader was killed, want under %v", failover, failoverBound)
	}

	live := c.running()[0]
	l, err := c.list(live, false)
	if err != nil {
		t.Fatalf("list through %s: %v", live.name, err)
	}
	listed := nsRevisions(t, l)
	load.checkAgainst(t, listed)

	// Restarted on its data, the killed server catches up: its own state
	// (a stale read) is the leader's.
	leader.start(t)
	c.waitFormed(30 * time.Second)
	now := c.leader()
	l, err = c.list(now, false)
	if err != nil {
		t.Fatalf("list on the leader %s: %v", now.name, err)
	}
	want := nsRevisions(t, l)
	if d := diffRevisions(want, listed); d != "" {
		t.Errorf("the namespaces changed after the load stopped: %s", d)
	}
	var diff string
	eventually(t, 20*time.Second, func() bool {
		l, err := c.list(leader, true)
		if err != nil {
			diff = err.Error()
			return false
		}
		diff = diffRevisions(nsRevisions(t, l), want)
		return diff == ""
	}, func() string {
		return fmt.Sprintf("the restarted server %s's own list is not the leader's %s's: %s", leader.name, now.name, diff)
	})
}
