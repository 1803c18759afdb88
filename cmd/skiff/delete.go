package main

import (
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

func newDeleteCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "delete KIND NAME",
		Short:   "Delete an object; a pod's containers are stopped and removed from its node",
		Example: "  skiff delete pod hello",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := parseKind(args[0])
			if err != nil {
				return err
			}
			c, name, ns := newClients(g.server), args[1], g.namespace
			ctx := cmd.Context()
			switch kind {
			case "Pod":
				_, err = c.pods.Delete(ctx, connect.NewRequest(&skiffv1.DeletePodRequest{Namespace: ns, Name: name}))
			case "Node":
				_, err = c.nodes.Delete(ctx, connect.NewRequest(&skiffv1.DeleteNodeRequest{Name: name}))
			case "Namespace":
				_, err = c.namespaces.Delete(ctx, connect.NewRequest(&skiffv1.DeleteNamespaceRequest{Name: name}))
			}
			if err != nil {
				return plain(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %q deleted\n", strings.ToLower(kind), name)
			return nil
		},
	}
	cmd.Flags().StringVarP(&g.namespace, "namespace", "n", "", "namespace (default \"default\")")
	return cmd
}
