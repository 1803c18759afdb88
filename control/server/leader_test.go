package server

import (
	"context"
	"testing"
	"time"
)

// TestWhileLeader shows that leader-only loops run exactly while this
// server leads, and stop with the process. The loop reports each start and
// stop on a channel, so the test waits on what happened, not on time.
func TestWhileLeader(t *testing.T) {
	leader := make(chan bool)
	started, stopped := make(chan struct{}, 8), make(chan struct{}, 8)
	loop := func(ctx context.Context) {
		started <- struct{}{}
		<-ctx.Done()
		stopped <- struct{}{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := WhileLeader(ctx, leader, loop)
	expect := func(what string, ch <-chan struct{}) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("the loop did not %s", what)
		}
	}
	none := func(what string, ch <-chan struct{}) {
		t.Helper()
		select {
		case <-ch:
			t.Fatalf("the loop did %s", what)
		default:
		}
	}

	leader <- true
	expect("start on gaining leadership", started)
	leader <- true // still leader: no second copy
	leader <- false
	expect("stop on losing leadership", stopped)
	none("start a second copy while leading", started)
	leader <- false // still not leader: nothing to stop
	leader <- true
	expect("start again on leading again", started)
	cancel()
	<-done
	expect("stop with the process", stopped)
	none("start again after the process stopped", started)
}
