package main

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

func newScaleCmd(g *globals) *cobra.Command {
	var replicas int32 = -1
	cmd := &cobra.Command{
		Use:   "scale (deployment|replicaset)/NAME --replicas N",
		Short: "Set the number of replicas of a deployment or ReplicaSet",
		Long: `Scale sets spec.replicas of a deployment or a ReplicaSet, as kubectl scale
does. A deployment's scale goes to its current ReplicaSet; during a rollout,
within its maxSurge and maxUnavailable.`,
		Example: "  skiff scale deployment/web --replicas 5\n  skiff scale rs web-7d9c5b8f4 --replicas 0",
		Args:    cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, name, err := parseTarget(args, kinds.Deployment, kinds.ReplicaSet)
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("replicas") {
				return errors.New("--replicas: required flag")
			}
			if replicas < 0 {
				return fmt.Errorf("--replicas: invalid value %d: must be greater than or equal to 0", replicas)
			}
			c, err := g.clients()
			if err != nil {
				return err
			}
			ns := namespaceFor(k, g.namespace, false)
			ctx := cmd.Context()
			for try := 0; ; try++ {
				o, err := c.of(k).Get(ctx, ns, name)
				if err != nil {
					return plain(err)
				}
				switch x := o.(type) {
				case *skiffv1.Deployment:
					x.Spec.Replicas = proto.Int32(replicas)
				case *skiffv1.ReplicaSet:
					x.Spec.Replicas = proto.Int32(replicas)
				}
				_, err = c.of(k).Update(ctx, o, false)
				if connect.CodeOf(err) == connect.CodeAborted && try < 5 {
					continue // a controller reported status in between
				}
				if err != nil {
					return plain(err)
				}
				break
			}
			fmt.Fprintln(cmd.OutOrStdout(), qualified(k, name)+" scaled")
			return nil
		},
	}
	cmd.Flags().Int32Var(&replicas, "replicas", -1, "the number of replicas (required)")
	cmd.Flags().StringVarP(&g.namespace, "namespace", "n", "", "namespace (default \"default\")")
	return cmd
}
