package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/control/api/kinds"
)

// labelChange is what skiff label's arguments ask: labels to set and keys
// to remove.
type labelChange struct {
	set    map[string]string
	remove []string
}

// parseLabelArgs reads KEY=VALUE and KEY- arguments, as kubectl label does.
func parseLabelArgs(args []string) (labelChange, error) {
	ch := labelChange{set: map[string]string{}}
	for _, a := range args {
		switch {
		case strings.HasSuffix(a, "-") && !strings.Contains(a, "="):
			ch.remove = append(ch.remove, strings.TrimSuffix(a, "-"))
		case strings.Contains(a, "="):
			k, v, _ := strings.Cut(a, "=")
			if k == "" {
				return ch, fmt.Errorf("invalid label %q: the key is empty", a)
			}
			if _, dup := ch.set[k]; dup {
				return ch, fmt.Errorf("label %q is given twice", k)
			}
			ch.set[k] = v
		default:
			return ch, fmt.Errorf("invalid label %q: want KEY=VALUE to set or KEY- to remove", a)
		}
	}
	for _, k := range ch.remove {
		if _, ok := ch.set[k]; ok {
			return ch, fmt.Errorf("label %q is both set and removed", k)
		}
	}
	if len(ch.set) == 0 && len(ch.remove) == 0 {
		return ch, fmt.Errorf("at least one label update is required: KEY=VALUE or KEY-")
	}
	return ch, nil
}

// apply changes labels in place: a label that has another value already
// changes only with overwrite. It returns errUnchanged when nothing would
// change.
func (ch labelChange) apply(labels map[string]string, overwrite bool) error {
	changed := false
	keys := make([]string, 0, len(ch.set))
	for k := range ch.set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		old, ok := labels[k]
		if ok && old != ch.set[k] && !overwrite {
			return fmt.Errorf("%q already has a value (%s), and --overwrite is false", k, old)
		}
		if !ok || old != ch.set[k] {
			labels[k] = ch.set[k]
			changed = true
		}
	}
	for _, k := range ch.remove {
		if _, ok := labels[k]; ok {
			delete(labels, k)
			changed = true
		}
	}
	if !changed {
		return errUnchanged
	}
	return nil
}

func newLabelCmd(g *globals) *cobra.Command {
	var overwrite bool
	cmd := &cobra.Command{
		Use:   "label KIND NAME KEY=VALUE... [KEY-]...",
		Short: "Set or remove labels of an object",
		Long: `Label sets and removes an object's labels, as kubectl label does: KEY=VALUE
sets a label, KEY- removes one. A label that has another value already is
changed only with --overwrite. Label nodes so that pods pick them with a
nodeSelector or node affinity, or spread over them by a topology key.`,
		Example: `  skiff label node node-1 disktype=ssd topology.kubernetes.io/zone=z1
  skiff label node node-1 disktype=nvme --overwrite
  skiff label pod hello tier-`,
		Args:              cobra.MinimumNArgs(3),
		ValidArgsFunction: completeKindAndName(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := kinds.Lookup(args[0])
			if err != nil {
				return err
			}
			ch, err := parseLabelArgs(args[2:])
			if err != nil {
				return err
			}
			c, err := g.clients()
			if err != nil {
				return err
			}
			wrote, err := editObject(cmd.Context(), c, k, namespaceFor(k, g.namespace, false), args[1], func(obj kinds.Object) error {
				m := obj.GetMetadata()
				if m.Labels == nil {
					m.Labels = map[string]string{}
				}
				return ch.apply(m.Labels, overwrite)
			})
			if err != nil {
				return err
			}
			verb := "labeled"
			switch {
			case !wrote:
				verb = "not labeled"
			case len(ch.set) == 0:
				verb = "unlabeled"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s/%s %s\n", k.Singular, args[1], verb)
			return nil
		},
	}
	cmd.Flags().BoolVar(&overwrite, "overwrite", false, "change labels that have another value already")
	cmd.Flags().StringVarP(&g.namespace, "namespace", "n", "", "namespace (default \"default\")")
	return cmd
}
