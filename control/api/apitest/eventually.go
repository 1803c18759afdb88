// Package apitest holds what the tests of the rooms that speak the API
// (apiserver clients: scheduler, controllers, server, agent, the CLI)
// share. It is imported by tests only.
package apitest

import (
	"testing"
	"time"
)

// Eventually waits until cond holds, looking every 10ms, and fails the test
// with what describe says when it does not within timeout. It is how these
// rooms' tests wait for a condition; none sleeps to synchronise.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, describe())
		}
		<-tick.C
	}
}
