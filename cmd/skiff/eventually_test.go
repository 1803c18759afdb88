package main

import (
	"testing"
	"time"
)

// eventually waits until cond holds, looking every 20ms, and fails the test
// with what describe says when it does not within timeout. It is how the
// tests of this package wait for a condition; none sleeps to synchronise.
func eventually(t testing.TB, timeout time.Duration, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, describe())
		}
		<-tick.C
	}
}
