package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/control/apiserver"
	"skiff.dev/skiff/control/controllers"
)

// lifecycleFlags are how long a server waits on a node that is gone
// before it acts (skiff server, skiff dev). Options built without flags
// (tests, bench) take the defaults.
type lifecycleFlags struct {
	notReadySeconds, unreachableSeconds *int64 // nil without flags
	nodeGrace                           time.Duration
}

func (l *lifecycleFlags) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	l.notReadySeconds = f.Int64("default-not-ready-toleration-seconds", apiserver.DefaultTolerationSeconds,
		"tolerationSeconds of the node.kubernetes.io/not-ready:NoExecute toleration every pod gets unless it has its own: how long its node may report not ready before the pod is evicted")
	l.unreachableSeconds = f.Int64("default-unreachable-toleration-seconds", apiserver.DefaultTolerationSeconds,
		"tolerationSeconds of the node.kubernetes.io/unreachable:NoExecute toleration every pod gets unless it has its own: how long its node's agent may be gone before the pod is evicted")
	f.DurationVar(&l.nodeGrace, "node-monitor-grace-period", controllers.DefaultNodeMonitorGracePeriod,
		"how long the Ready heartbeat of a node whose agent does not gossip may go unchanged before the node is marked Unknown (an agent in the gossip pool is seen gone within seconds)")
}

// settings checks the flags and returns the default tolerations and the
// node monitor grace period (0: the server's default).
func (l *lifecycleFlags) settings() (apiserver.Tolerations, time.Duration, error) {
	for _, f := range []struct {
		flag string
		v    *int64
	}{{"default-not-ready-toleration-seconds", l.notReadySeconds}, {"default-unreachable-toleration-seconds", l.unreachableSeconds}} {
		if f.v != nil && *f.v < 0 {
			return apiserver.Tolerations{}, 0, fmt.Errorf("--%s: invalid value %d: must not be negative", f.flag, *f.v)
		}
	}
	if l.nodeGrace < 0 {
		return apiserver.Tolerations{}, 0, fmt.Errorf("--node-monitor-grace-period: invalid value %s: must be positive", l.nodeGrace)
	}
	return apiserver.Tolerations{NotReadySeconds: l.notReadySeconds, UnreachableSeconds: l.unreachableSeconds}, l.nodeGrace, nil
}
