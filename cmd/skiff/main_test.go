package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a goroutine outlives the tests: stopping dev
// mode must stop the store, the API server, the scheduler, the CRI server
// and the agent.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
