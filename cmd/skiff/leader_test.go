package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// TestWhileLeader shows that leader-only loops run exactly while this
// server leads, and stop with the process.
func TestWhileLeader(t *testing.T) {
	leader := make(chan bool)
	var running, starts atomic.Int32
	loop := func(ctx context.Context) {
		starts.Add(1)
		running.Add(1)
		defer running.Add(-1)
		<-ctx.Done()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := whileLeader(ctx, leader, loop)

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		eventually(t, 5*time.Second, cond, func() string {
			return fmt.Sprintf("still waiting until %s (running %d, starts %d)", what, running.Load(), starts.Load())
		})
	}
	leader <- true
	waitFor("the loop runs", func() bool { return running.Load() == 1 })
	leader <- true // still leader: no second copy
	leader <- false
	waitFor("the loop stops on losing leadership", func() bool { return running.Load() == 0 })
	leader <- false
	leader <- true
	waitFor("the loop runs again", func() bool { return running.Load() == 1 && starts.Load() == 2 })
	cancel()
	<-done
	if running.Load() != 0 || starts.Load() != 2 {
		t.Errorf("after shutdown: %d running, %d starts; want 0 and 2", running.Load(), starts.Load())
	}
}
