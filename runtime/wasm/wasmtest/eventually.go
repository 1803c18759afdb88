package wasmtest

import "time"

// T is what Eventually needs of a *testing.T or *testing.B (the package
// does not import testing, so that the bench command may build modules
// with it).
type T interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Eventually waits until cond holds, checking every few milliseconds, and
// fails t with describe() when timeout passes first: the one way the tests
// of the runtime and of the CRI server wait for a condition.
func Eventually(t T, timeout time.Duration, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, describe())
		}
		<-tick.C
	}
}

// WithCustomSection returns module with a custom section holding payload
// appended: a different module (another digest, another compilation) that
// runs the same.
func WithCustomSection(module []byte, payload string) []byte {
	const name = "skiff-test"
	content := append(uleb(nil, uint32(len(name))), name...)
	return section(append([]byte{}, module...), 0, append(content, payload...))
}
