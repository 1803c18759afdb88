package main

import (
	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

func newLogsCmd(g *globals) *cobra.Command {
	var container string
	cmd := &cobra.Command{
		Use:   "logs POD",
		Short: "Print the output of a pod's container (its latest run)",
		Example: `  skiff logs hello
  skiff logs web -c server -n shop`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			res, err := c.pods.Logs(cmd.Context(), connect.NewRequest(&skiffv1.PodLogsRequest{
				Namespace: g.namespace, Name: args[0], Container: container,
			}))
			if err != nil {
				return plain(err)
			}
			_, err = cmd.OutOrStdout().Write(res.Msg.GetData())
			return err
		},
	}
	cmd.Flags().StringVarP(&container, "container", "c", "", "container name; may be left out when the pod has one")
	cmd.Flags().StringVarP(&g.namespace, "namespace", "n", "", "namespace (default \"default\")")
	return cmd
}
