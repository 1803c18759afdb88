package server

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if goroutines outlive the tests: a server stops
// everything it starts (the store, the gossip pool, the API, the loops)
// before Run returns.
func TestMain(m *testing.M) {
	// memberlist's Shutdown does not wait for a probe in flight: it ends
	// by itself within the probe timeout (hashicorp/memberlist, state.go
	// probeNode), after the pool has stopped.
	//
	// A write in flight when a server stops may never be answered: raft
	// does not answer an entry it committed but had not yet handed to the
	// state machine when it shut down (hashicorp/raft#498), and the store's
	// wait goroutine for it stays (control/store, Store.wait). It is one
	// goroutine per such write, only after the store stopped.
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"),
		goleak.IgnoreAnyFunction("skiff.dev/skiff/control/store.(*Store).wait.func1"),
	)
}
