package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a goroutine outlives the tests: stopping dev
// mode must stop the store, the API server, the scheduler, the CRI server
// and the agent.
func TestMain(m *testing.M) {
	// memberlist's Shutdown does not wait for a probe in flight: it ends
	// by itself within the probe timeout (hashicorp/memberlist, state.go
	// probeNode), after the pool has stopped.
	goleak.VerifyTestMain(cleaningUp{m}, goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}

// cleaningUp runs the tests, then removes the skiff binary the cluster
// tests built.
type cleaningUp struct{ m *testing.M }

func (c cleaningUp) Run() int {
	defer removeSkiffBinary()
	return c.m.Run()
}
