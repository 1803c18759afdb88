// Package runtimetest holds what the tests of the runtime packages, and the
// dev tools that run containers, share.
package runtimetest

import (
	"testing"
	"time"
)

// Eventually polls cond until it holds, and fails the test with describe's
// account if it has not after timeout. Tests wait for a condition through
// it, never for a fixed time.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for wait := time.Millisecond; !cond(); wait = min(2*wait, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, describe())
		}
		time.Sleep(wait)
	}
}
