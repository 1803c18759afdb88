package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
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
// tests built. It fails the run if the tests left skiff's network (its
// bridge, its or CNI's iptables chains, its routes) in the machine's own
// network namespace, which no test may touch.
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
	before := machineNetwork()
	code := c.m.Run()
	if after := machineNetwork(); !slices.Equal(before, after) {
		fmt.Fprintf(os.Stderr, "FAIL: the tests changed the machine's network namespace: before %q, after %q: a node in a test must run with --no-cni, or on a test host (network_test.go)\n", before, after)
		return 1
	}
	if _, err := os.Stat(defaultConfig); err == nil {
		fmt.Fprintf(os.Stderr, "FAIL: a test let a server write the default client config ($%s, %s): give every server --client-config in the test's directory\n", configEnv, defaultConfig)
		return 1
	}
	return code
}

// machineNetwork lists what skiff's pod network would add to the machine's
// network namespace: links named skiff*, iptables chains named SKIFF-* or
// CNI-*, and routes of skiff's protocol (83), sorted. Empty without root.
func machineNetwork() []string {
	if os.Geteuid() != 0 {
		return nil
	}
	var out []string
	if links, err := net.Interfaces(); err == nil {
		for _, l := range links {
			if strings.HasPrefix(l.Name, "skiff") {
				out = append(out, "link "+l.Name)
			}
		}
	}
	for _, table := range []string{"nat", "filter"} {
		save, _ := exec.Command("iptables-save", "-t", table).Output()
		for line := range strings.Lines(string(save)) {
			if strings.HasPrefix(line, ":SKIFF-") || strings.HasPrefix(line, ":CNI-") {
				out = append(out, table+" chain "+strings.Fields(line)[0][1:])
			}
		}
	}
	routes, _ := exec.Command("ip", "route", "show", "proto", "83").Output()
	for line := range strings.Lines(string(routes)) {
		out = append(out, "route "+strings.TrimSpace(line))
	}
	slices.Sort(out)
	return out
}
