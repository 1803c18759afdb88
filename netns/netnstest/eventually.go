package netnstest

import (
	"testing"
	"time"
)

// Eventually polls cond until it holds, and fails the test with describe's
// account if it has not after timeout. Tests wait for a condition through
// it, never for a fixed time. It is the one such helper of the rooms whose
// tests may import netns (netns, runtime, cri, node, node/proxy) and of the
// dev tools; the rooms of the control plane keep their own, behind the
// import walls.
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
