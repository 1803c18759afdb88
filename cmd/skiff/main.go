// Command skiff is the one binary of skiff: the dev cluster, and the client
// that applies manifests and reads objects and logs.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const defaultServer = "127.0.0.1:7650"

func main() {
	if err := newRoot().Execute(); err != nil {
		var exit exitError
		if errors.As(err, &exit) { // skiff exec: the command's exit code
			os.Exit(exit.code)
		}
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// globals are the flags every client command shares.
type globals struct {
	server    string // "" unless --server is given
	config    string
	namespace string
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "skiff",
		Short: "skiff runs Wasm modules and OCI images as pods on a small Raft-replicated control plane",
		Long: `skiff is a lightweight orchestrator: one binary, a Raft-replicated control plane,
and node agents that run pods of WebAssembly modules and OCI images through a
CRI server.

Start a one-node cluster with "skiff dev", then use the client commands
(apply, get, describe, delete, logs, exec, port-forward, top, rollout, scale,
label, taint, cordon) as you would kubectl. The kinds are pods, deployments,
replicasets, services, endpoints, nodes, namespaces and events. The client
finds the server from --server, then $SKIFF_SERVER, then the client config, then ` + defaultServer + `.
It authenticates with the bearer token of $SKIFF_TOKEN or of the client
config (--config, $SKIFF_CONFIG, else ~/.skiff/config), which skiff server
and skiff dev write with an admin token at their first start, along with
the cluster CA that the client verifies the server's certificate with.
It exits 0 on success and 1 on any error; skiff exec exits with the
command's exit code.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.PersistentFlags().StringVar(&g.server, "server", "", "address of the skiff API server (host:port or URL); default $SKIFF_SERVER, else the client config's, else "+defaultServer)
	root.PersistentFlags().StringVar(&g.config, "config", defaultConfigPath(), "client config file (server, token, cluster CA) that skiff server and skiff dev write at first start; env "+configEnv)
	root.AddCommand(
		newDevCmd(),
		newServerCmd(),
		newAgentCmd(g),
		newCRICmd(),
		newApplyCmd(g),
		newGetCmd(g),
		newDeleteCmd(g),
		newDescribeCmd(g),
		newLabelCmd(g),
		newTaintCmd(g),
		newCordonCmd(g, true),
		newCordonCmd(g, false),
		newMembersCmd(g),
		newLogsCmd(g),
		newExecCmd(g),
		newPortForwardCmd(g),
		newTopCmd(g),
		newRolloutCmd(g),
		newScaleCmd(g),
		newImageCmd(),
		newBenchCmd(g),
		newSnapshotCmd(g),
		newTokenCmd(g),
		newAuthCmd(g),
		newNetworkCmd(),
	)
	return root
}
