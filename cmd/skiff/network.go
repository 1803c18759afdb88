package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/node"
)

func newNetworkCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "network",
		Short: "Manage what a node's pod network put on this machine",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newNetworkCleanupCmd())
	return cmd
}

func newNetworkCleanupCmd() *cobra.Command {
	var stateDir string
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove the bridge, iptables chains, routes and CNI state of a stopped node",
		Long: `Cleanup removes what a node's pod network put on this machine, as
kube-proxy --cleanup does: the service proxy's SKIFF-* chains and their jumps,
skiff's routes (to other nodes' pod CIDRs, the unreachable service CIDR) and
routing rule, the bridge skiff0, and the CNI state under --state-dir/cni. Run
it after the node has stopped and its pods are gone: it refuses while a pod
of the node still has a network namespace. A node that starts again makes
them anew. It needs root.`,
		Example: `  skiff network cleanup
  skiff network cleanup --state-dir /run/skiff-2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return errors.New("skiff network cleanup needs root")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			if err := node.CleanupNetwork(ctx, stateDir); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "removed the pod network's bridge, chains, routes and CNI state")
			return nil
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", "/run/skiff", "the node's --state-dir")
	return cmd
}
