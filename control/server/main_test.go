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
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}
