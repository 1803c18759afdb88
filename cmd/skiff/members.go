package main

import (
	"fmt"
	"text/tabwriter"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

func newMembersCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "members",
		Short: "List the cluster's servers (with their Raft roles) and agents",
		Long: `Members lists the cluster as the server answering sees it: every Raft server
with its role (leader, voter, nonvoter) and address, and every member of the
gossip pool (servers and agents) with its state (alive, failed, left). A
server run without --gossip-listen knows only its Raft servers.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			res, err := skiffv1connect.NewClusterServiceClient(c.hc, c.base).Members(cmd.Context(), connect.NewRequest(&skiffv1.MembersRequest{}))
			if err != nil {
				return plain(err)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 3, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLE\tRAFT\tSTATE\tAPI\tRAFT ADDRESS\tGOSSIP")
			for _, m := range res.Msg.GetMembers() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.GetName(), m.GetRole(), orDefault(m.GetRaftRole(), "-"),
					m.GetState(), orDefault(m.GetApiAddress(), "-"), orDefault(m.GetRaftAddress(), "-"), orDefault(m.GetGossipAddress(), "-"))
			}
			return tw.Flush()
		},
	}
}
