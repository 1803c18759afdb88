package main

import (
	"fmt"

	"github.com/spf13/cobra"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

// newCordonCmd is skiff cordon (set) or skiff uncordon (!set): whether the
// scheduler may place new pods on a node. Pods already there stay.
func newCordonCmd(g *globals, set bool) *cobra.Command {
	use, short, done := "cordon", "Mark a node unschedulable: no new pods go there", "cordoned"
	if !set {
		use, short, done = "uncordon", "Mark a node schedulable again", "uncordoned"
	}
	return &cobra.Command{
		Use:   use + " NAME",
		Short: short,
		Long: `Cordon sets a node's spec.unschedulable, as kubectl cordon does: the
scheduler places no new pods there (unless they tolerate the
node.kubernetes.io/unschedulable:NoSchedule taint), and the pods already
there keep running. Uncordon clears it.`,
		Example: "  skiff " + use + " node-1",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			wrote, err := editObject(cmd.Context(), c, kinds.Node, "", args[0], func(obj kinds.Object) error {
				n := obj.(*skiffv1.Node)
				if n.GetSpec().GetUnschedulable() == set {
					return errUnchanged
				}
				if n.Spec == nil {
					n.Spec = &skiffv1.NodeSpec{}
				}
				n.Spec.Unschedulable = set
				return nil
			})
			if err != nil {
				return err
			}
			if !wrote {
				done = "already " + done
			}
			fmt.Fprintf(cmd.OutOrStdout(), "node/%s %s\n", args[0], done)
			return nil
		},
	}
}
