package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

// taintChange is what skiff taint's arguments ask: taints to add and
// taints to remove (by key, and by effect when one is given).
type taintChange struct {
	add    []*skiffv1.Taint
	remove []*skiffv1.Taint
}

// parseTaintArgs reads KEY[=VALUE]:EFFECT to add and KEY[:EFFECT]- to
// remove, as kubectl taint does.
func parseTaintArgs(args []string) (taintChange, error) {
	var ch taintChange
	for _, a := range args {
		if s, ok := strings.CutSuffix(a, "-"); ok {
			key, effect, _ := strings.Cut(s, ":")
			key, _, _ = strings.Cut(key, "=")
			if key == "" {
				return ch, fmt.Errorf("invalid taint %q: the key is empty", a)
			}
			if effect != "" && !taintEffect(effect) {
				return ch, fmt.Errorf("invalid taint %q: unsupported effect %q: supported are NoSchedule, PreferNoSchedule, NoExecute", a, effect)
			}
			ch.remove = append(ch.remove, &skiffv1.Taint{Key: key, Effect: effect})
			continue
		}
		kv, effect, ok := strings.Cut(a, ":")
		if !ok || effect == "" {
			return ch, fmt.Errorf("invalid taint %q: want KEY[=VALUE]:EFFECT to add or KEY[:EFFECT]- to remove", a)
		}
		if !taintEffect(effect) {
			return ch, fmt.Errorf("invalid taint %q: unsupported effect %q: supported are NoSchedule, PreferNoSchedule, NoExecute", a, effect)
		}
		key, value, _ := strings.Cut(kv, "=")
		if key == "" {
			return ch, fmt.Errorf("invalid taint %q: the key is empty", a)
		}
		for _, t := range ch.add {
			if t.Key == key && t.Effect == effect {
				return ch, fmt.Errorf("taint %s:%s is given twice", key, effect)
			}
		}
		ch.add = append(ch.add, &skiffv1.Taint{Key: key, Value: value, Effect: effect})
	}
	if len(ch.add) == 0 && len(ch.remove) == 0 {
		return ch, fmt.Errorf("at least one taint update is required: KEY[=VALUE]:EFFECT or KEY[:EFFECT]-")
	}
	return ch, nil
}

func taintEffect(e string) bool {
	return e == "NoSchedule" || e == "PreferNoSchedule" || e == "NoExecute"
}

// apply returns the node's taints with the change made. A taint with the
// key and effect of one to add is replaced only with overwrite; one to
// remove that the node does not have is an error. A taint that stays keeps
// its time_added.
func (ch taintChange) apply(name string, taints []*skiffv1.Taint, overwrite bool) ([]*skiffv1.Taint, error) {
	out := taints
	for _, r := range ch.remove {
		kept := out[:0:0]
		for _, t := range out {
			if t.GetKey() == r.Key && (r.Effect == "" || t.GetEffect() == r.Effect) {
				continue
			}
			kept = append(kept, t)
		}
		if len(kept) == len(out) {
			what := r.Key
			if r.Effect != "" {
				what += ":" + r.Effect
			}
			return nil, fmt.Errorf("taint %q not found on node %s", what, name)
		}
		out = kept
	}
	for _, a := range ch.add {
		replaced := false
		for i, t := range out {
			if t.GetKey() != a.Key || t.GetEffect() != a.Effect {
				continue
			}
			if !overwrite {
				return nil, fmt.Errorf("node %s already has a %s taint with effect %s, and --overwrite is false", name, a.Key, a.Effect)
			}
			out = append(out[:i:i], out[i:]...) // a copy, so that the node's list is left as it was
			out[i] = a
			replaced = true
			break
		}
		if !replaced {
			out = append(out[:len(out):len(out)], a)
		}
	}
	return out, nil
}

func newTaintCmd(g *globals) *cobra.Command {
	var overwrite bool
	cmd := &cobra.Command{
		Use:   "taint node NAME KEY[=VALUE]:EFFECT... [KEY[:EFFECT]-]...",
		Short: "Add or remove taints of a node",
		Long: `Taint adds and removes a node's taints, as kubectl taint does. A pod goes to
a tainted node only if it tolerates the taint (spec.tolerations): the
effect NoSchedule keeps other pods off, PreferNoSchedule places them there
last, NoExecute keeps them off too. KEY=VALUE:EFFECT adds a taint,
KEY:EFFECT- removes the taint of that key and effect, KEY- every taint of
that key. A taint of the same key and effect is replaced only with
--overwrite.`,
		Example: `  skiff taint node node-1 dedicated=gpu:NoSchedule
  skiff taint node node-1 dedicated:NoSchedule-
  skiff taint node node-1 spot:PreferNoSchedule`,
		Args: cobra.MinimumNArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := kinds.Lookup(args[0])
			if err != nil {
				return err
			}
			if k != kinds.Node {
				return fmt.Errorf("taint applies to nodes only, not %s", k.Plural)
			}
			ch, err := parseTaintArgs(args[2:])
			if err != nil {
				return err
			}
			c, err := g.clients()
			if err != nil {
				return err
			}
			name := args[1]
			if _, err := editObject(cmd.Context(), c, kinds.Node, "", name, func(obj kinds.Object) error {
				n := obj.(*skiffv1.Node)
				if n.Spec == nil {
					n.Spec = &skiffv1.NodeSpec{}
				}
				ts, err := ch.apply(name, n.Spec.Taints, overwrite)
				n.Spec.Taints = ts
				return err
			}); err != nil {
				return err
			}
			verb := "tainted"
			if len(ch.add) == 0 {
				verb = "untainted"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "node/%s %s\n", name, verb)
			return nil
		},
	}
	cmd.Flags().BoolVar(&overwrite, "overwrite", false, "replace a taint of the same key and effect")
	return cmd
}

// taintString is a taint as kubectl writes it: key=value:Effect.
func taintString(t *skiffv1.Taint) string {
	s := t.GetKey()
	if t.GetValue() != "" {
		s += "=" + t.GetValue()
	}
	return s + ":" + t.GetEffect()
}
