package main

import (
	"fmt"
	"os"
	"path/filepath"
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
//
// It points $SKIFF_CONFIG, the default client config, into a directory of
// its own for the run, the skiff processes the tests start included: no
// test reads or writes the user's ~/.skiff/config. Each test names the
// client config it means (--config, --client-config); one that left its
// server to write the default fails the run.
type cleaningUp struct{ m *testing.M }

func (c cleaningUp) Run() int {
	defer removeSkiffBinary()
	dir, err := os.MkdirTemp("", "skiff-test-home-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "TestMain:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	defaultConfig := filepath.Join(dir, "config")
	if err := os.Setenv(configEnv, defaultConfig); err != nil {
		fmt.Fprintln(os.Stderr, "TestMain:", err)
		return 1
	}
	code := c.m.Run()
	if _, err := os.Stat(defaultConfig); err == nil {
		fmt.Fprintf(os.Stderr, "FAIL: a test let a server write the default client config ($%s, %s): give every server --client-config in the test's directory\n", configEnv, defaultConfig)
		return 1
	}
	return code
}
