package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

func newRolloutCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout SUBCOMMAND deployment/NAME",
		Short: "Follow, undo, restart, pause or resume a deployment's rollout",
		Long: `Rollout manages the rollout of a deployment, as kubectl rollout does: each
template a deployment has had is a ReplicaSet of its, numbered by the
annotation deployment.kubernetes.io/revision.

  status    waits until the rollout is done (or past its progress deadline)
  history   lists the revisions
  undo      goes back to the previous revision, or --to-revision N
  restart   replaces every pod, through a template annotation
  pause     stops rolling out template changes (scaling still applies)
  resume    rolls out again`,
		Example: `  skiff rollout status deployment/web
  skiff rollout history deploy/web
  skiff rollout undo deployment/web --to-revision 1
  skiff rollout restart deployment/web`,
	}
	cmd.PersistentFlags().StringVarP(&g.namespace, "namespace", "n", "", "namespace (default \"default\")")
	cmd.AddCommand(newRolloutStatusCmd(g), newRolloutHistoryCmd(g), newRolloutUndoCmd(g), newRolloutRestartCmd(g),
		newRolloutPauseCmd(g, true), newRolloutPauseCmd(g, false))
	return cmd
}

// parseTarget reads "kind/name" or "kind name" into a kind and a name;
// only the kinds of allowed are accepted.
func parseTarget(args []string, allowed ...*kinds.Kind) (*kinds.Kind, string, error) {
	var kind, name string
	switch {
	case len(args) == 1 && strings.Contains(args[0], "/"):
		kind, name, _ = strings.Cut(args[0], "/")
	case len(args) == 2:
		kind, name = args[0], args[1]
	default:
		return nil, "", errors.New("give the object as KIND/NAME (deployment/web) or KIND NAME")
	}
	k, err := kinds.Lookup(strings.TrimSuffix(kind, ".apps"))
	if err != nil {
		return nil, "", err
	}
	if !slices.Contains(allowed, k) {
		var names []string
		for _, a := range allowed {
			names = append(names, a.Plural)
		}
		return nil, "", fmt.Errorf("%s: unsupported kind: use %s", kind, strings.Join(names, " or "))
	}
	if name == "" {
		return nil, "", errors.New("name required: NAME is empty")
	}
	return k, name, nil
}

// qualified is how kubectl names an object in its messages:
// "deployment.apps/web".
func qualified(k *kinds.Kind, name string) string {
	if k.Group == "" {
		return k.Singular + "/" + name
	}
	return k.Singular + "." + k.Group + "/" + name
}

func getDeployment(ctx context.Context, c *clients, ns, name string) (*skiffv1.Deployment, error) {
	o, err := c.of(kinds.Deployment).Get(ctx, ns, name)
	if err != nil {
		return nil, plain(err)
	}
	return o.(*skiffv1.Deployment), nil
}

// deploymentRolloutStatus is kubectl's reading of a deployment's rollout:
// the message to print, whether it is done, or an error when it is past
// its progress deadline.
func deploymentRolloutStatus(d *skiffv1.Deployment) (string, bool, error) {
	name := d.GetMetadata().GetName()
	st := d.GetStatus()
	if d.GetMetadata().GetGeneration() > st.GetObservedGeneration() {
		return "Waiting for deployment spec update to be observed...", false, nil
	}
	for _, c := range st.GetConditions() {
		if c.GetType() == "Progressing" && c.GetReason() == "ProgressDeadlineExceeded" {
			return "", false, fmt.Errorf("deployment %q exceeded its progress deadline", name)
		}
	}
	want := kinds.Replicas(d.GetSpec().Replicas)
	switch {
	case st.GetUpdatedReplicas() < want:
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d out of %d new replicas have been updated...", name, st.GetUpdatedReplicas(), want), false, nil
	case st.GetReplicas() > st.GetUpdatedReplicas():
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d old replicas are pending termination...", name, st.GetReplicas()-st.GetUpdatedReplicas()), false, nil
	case st.GetAvailableReplicas() < st.GetUpdatedReplicas():
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d of %d updated replicas are available...", name, st.GetAvailableReplicas(), st.GetUpdatedReplicas()), false, nil
	}
	return fmt.Sprintf("deployment %q successfully rolled out", name), true, nil
}

func newRolloutStatusCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	var watch bool
	cmd := &cobra.Command{
		Use:   "status deployment/NAME",
		Short: "Wait until a deployment's rollout is done",
		Long: `Status prints how far a deployment's rollout has come, as kubectl rollout
status does, and waits until every replica is of the current template and
available. It exits 1 when the deployment is past its progress deadline,
or when --timeout passes first.`,
		Example: "  skiff rollout status deployment/web --timeout 2m",
		Args:    cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, name, err := parseTarget(args, kinds.Deployment)
			if err != nil {
				return err
			}
			c, err := g.clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			err = rolloutStatus(ctx, cmd.OutOrStdout(), c, namespaceFor(kinds.Deployment, g.namespace, false), name, watch)
			if errors.Is(err, context.DeadlineExceeded) || connect.CodeOf(err) == connect.CodeDeadlineExceeded {
				return fmt.Errorf("timed out waiting for the rollout of deployment %q after %s", name, timeout)
			}
			return err
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "how long to wait before giving up; 0 waits for ever")
	cmd.Flags().BoolVarP(&watch, "watch", "w", true, "wait for the rollout to finish; --watch=false prints where it is and returns")
	return cmd
}

// rolloutStatus prints each new state of the deployment's rollout until
// it is done; it follows the deployment by watching it.
func rolloutStatus(ctx context.Context, w io.Writer, c *clients, ns, name string, watch bool) error {
	last := ""
	show := func(d *skiffv1.Deployment) (bool, error) {
		msg, done, err := deploymentRolloutStatus(d)
		if err != nil {
			return false, err
		}
		if msg != last {
			fmt.Fprintln(w, msg)
			last = msg
		}
		return done, nil
	}
	for {
		d, err := getDeployment(ctx, c, ns, name)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if done, err := show(d); done || err != nil || !watch {
			return err
		}
		st, err := c.watching(kinds.Deployment).Watch(ctx, &skiffv1.WatchRequest{
			Namespace: ns, FieldSelector: "metadata.name=" + name, ResourceVersion: d.GetMetadata().GetResourceVersion(),
		})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return plain(err)
		}
		for st.Receive() {
			typ, o := st.Event()
			if typ == skiffv1.EventType_EVENT_TYPE_DELETED {
				_ = st.Close()
				return fmt.Errorf("deployment %q was deleted", name)
			}
			if done, err := show(o.(*skiffv1.Deployment)); done || err != nil {
				_ = st.Close()
				return err
			}
		}
		_ = st.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// The watch ended (a server went, say): read again and follow on.
	}
}

// revisions lists the ReplicaSets the deployment owns, oldest revision
// first.
func revisions(ctx context.Context, c *clients, d *skiffv1.Deployment) ([]*skiffv1.ReplicaSet, error) {
	m := d.GetMetadata()
	objs, _, err := c.of(kinds.ReplicaSet).List(ctx, &skiffv1.ListRequest{Namespace: m.GetNamespace()})
	if err != nil {
		return nil, plain(err)
	}
	var out []*skiffv1.ReplicaSet
	for _, o := range objs {
		rs := o.(*skiffv1.ReplicaSet)
		for _, r := range rs.GetMetadata().GetOwnerReferences() {
			if r.GetController() && r.GetUid() == m.GetUid() {
				out = append(out, rs)
			}
		}
	}
	slices.SortFunc(out, func(a, b *skiffv1.ReplicaSet) int { return int(revisionOf(a) - revisionOf(b)) })
	return out, nil
}

func revisionOf(rs *skiffv1.ReplicaSet) int64 {
	n, _ := strconv.ParseInt(rs.GetMetadata().GetAnnotations()[kinds.RevisionAnnotation], 10, 64)
	return n
}

func newRolloutHistoryCmd(g *globals) *cobra.Command {
	var rev int64
	cmd := &cobra.Command{
		Use:   "history deployment/NAME",
		Short: "List a deployment's revisions",
		Long: `History lists the revisions of a deployment, oldest first, with the
change-cause annotation each was made with (kubernetes.io/change-cause);
--revision N shows the pod template of one.`,
		Example: "  skiff rollout history deployment/web\n  skiff rollout history deployment/web --revision 2",
		Args:    cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, name, err := parseTarget(args, kinds.Deployment)
			if err != nil {
				return err
			}
			if rev < 0 {
				return fmt.Errorf("--revision: invalid value %d: must not be negative", rev)
			}
			c, err := g.clients()
			if err != nil {
				return err
			}
			d, err := getDeployment(cmd.Context(), c, namespaceFor(k, g.namespace, false), name)
			if err != nil {
				return err
			}
			rss, err := revisions(cmd.Context(), c, d)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if rev > 0 {
				i := slices.IndexFunc(rss, func(rs *skiffv1.ReplicaSet) bool { return revisionOf(rs) == rev })
				if i < 0 {
					return fmt.Errorf("unable to find the specified revision %d", rev)
				}
				fmt.Fprintf(w, "%s with revision #%d\n", qualified(k, name), rev)
				tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
				line := func(indent int, key, format string, args ...any) {
					fmt.Fprintf(tw, "%s%s:\t%s\n", strings.Repeat("  ", indent), key, fmt.Sprintf(format, args...))
				}
				podTemplate(tw, line, rss[i].GetSpec().GetTemplate())
				return tw.Flush()
			}
			fmt.Fprintln(w, qualified(k, name))
			tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "REVISION\tCHANGE-CAUSE")
			for _, rs := range rss {
				fmt.Fprintf(tw, "%d\t%s\n", revisionOf(rs), orNone(rs.GetMetadata().GetAnnotations()[kinds.ChangeCauseAnnotation]))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().Int64Var(&rev, "revision", 0, "show the pod template of this revision")
	return cmd
}

func newRolloutUndoCmd(g *globals) *cobra.Command {
	var to int64
	cmd := &cobra.Command{
		Use:   "undo deployment/NAME",
		Short: "Go back to a previous revision of a deployment",
		Long: `Undo puts the template of an earlier revision (the previous one, or
--to-revision N) back into the deployment, as kubectl rollout undo does; the
controller then rolls it out as a new revision.`,
		Example: "  skiff rollout undo deployment/web\n  skiff rollout undo deployment/web --to-revision 1",
		Args:    cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, name, err := parseTarget(args, kinds.Deployment)
			if err != nil {
				return err
			}
			if to < 0 {
				return fmt.Errorf("--to-revision: invalid value %d: must not be negative", to)
			}
			c, err := g.clients()
			if err != nil {
				return err
			}
			msg, err := rolloutUndo(cmd.Context(), c, namespaceFor(k, g.namespace, false), name, to)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), msg)
			return nil
		},
	}
	cmd.Flags().Int64Var(&to, "to-revision", 0, "the revision to go back to; 0 is the previous one")
	return cmd
}

// rolloutUndo copies the template of revision to (the previous revision
// when 0), without its pod-template-hash label, into the deployment.
func rolloutUndo(ctx context.Context, c *clients, ns, name string, to int64) (string, error) {
	for try := 0; ; try++ {
		d, err := getDeployment(ctx, c, ns, name)
		if err != nil {
			return "", err
		}
		rss, err := revisions(ctx, c, d)
		if err != nil {
			return "", err
		}
		var src *skiffv1.ReplicaSet
		if to == 0 {
			if len(rss) < 2 {
				return "", fmt.Errorf("no rollout history found for deployment %q", name)
			}
			src = rss[len(rss)-2]
		} else {
			for _, rs := range rss {
				if revisionOf(rs) == to {
					src = rs
				}
			}
			if src == nil {
				return "", fmt.Errorf("unable to find specified revision %d in history", to)
			}
		}
		t := proto.Clone(src.GetSpec().GetTemplate()).(*skiffv1.PodTemplateSpec)
		if t.GetMetadata() != nil {
			delete(t.Metadata.Labels, kinds.PodTemplateHashLabel)
		}
		if proto.Equal(t, d.GetSpec().GetTemplate()) {
			return fmt.Sprintf("%s skipped rollback (current template already matches revision %d)", qualified(kinds.Deployment, name), revisionOf(src)), nil
		}
		d.Spec.Template = t
		_, err = c.of(kinds.Deployment).Update(ctx, d, false)
		if connect.CodeOf(err) == connect.CodeAborted && try < 5 {
			continue // changed in between: read it again
		}
		if err != nil {
			return "", plain(err)
		}
		return qualified(kinds.Deployment, name) + " rolled back", nil
	}
}

// editDeployment applies change to the newest version of a deployment,
// reading it again when someone wrote in between.
func editDeployment(ctx context.Context, c *clients, ns, name string, change func(d *skiffv1.Deployment)) error {
	for try := 0; ; try++ {
		d, err := getDeployment(ctx, c, ns, name)
		if err != nil {
			return err
		}
		change(d)
		_, err = c.of(kinds.Deployment).Update(ctx, d, false)
		if connect.CodeOf(err) == connect.CodeAborted && try < 5 {
			continue
		}
		return plain(err)
	}
}

func newRolloutRestartCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "restart deployment/NAME",
		Short: "Replace every pod of a deployment",
		Long: `Restart sets the template annotation kubectl.kubernetes.io/restartedAt to
now, as kubectl rollout restart does: a new template, which the controller
rolls out by the deployment's strategy.`,
		Example: "  skiff rollout restart deployment/web",
		Args:    cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, name, err := parseTarget(args, kinds.Deployment)
			if err != nil {
				return err
			}
			c, err := g.clients()
			if err != nil {
				return err
			}
			now := time.Now().Format(time.RFC3339)
			err = editDeployment(cmd.Context(), c, namespaceFor(k, g.namespace, false), name, func(d *skiffv1.Deployment) {
				if d.Spec.Template.Metadata == nil {
					d.Spec.Template.Metadata = &skiffv1.ObjectMeta{}
				}
				if d.Spec.Template.Metadata.Annotations == nil {
					d.Spec.Template.Metadata.Annotations = map[string]string{}
				}
				d.Spec.Template.Metadata.Annotations[kinds.RestartedAtAnnotation] = now
			})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), qualified(k, name)+" restarted")
			return nil
		},
	}
}

func newRolloutPauseCmd(g *globals, pause bool) *cobra.Command {
	verb, done := "resume", "resumed"
	short := "Roll out a paused deployment's template again"
	if pause {
		verb, done = "pause", "paused"
		short = "Stop rolling out a deployment's template changes"
	}
	return &cobra.Command{
		Use:     verb + " deployment/NAME",
		Short:   short,
		Example: "  skiff rollout " + verb + " deployment/web",
		Args:    cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, name, err := parseTarget(args, kinds.Deployment)
			if err != nil {
				return err
			}
			c, err := g.clients()
			if err != nil {
				return err
			}
			ns := namespaceFor(k, g.namespace, false)
			d, err := getDeployment(cmd.Context(), c, ns, name)
			if err != nil {
				return err
			}
			if d.GetSpec().GetPaused() == pause {
				return fmt.Errorf("%s is not %s", qualified(k, name), map[bool]string{true: "resumed", false: "paused"}[pause])
			}
			if err := editDeployment(cmd.Context(), c, ns, name, func(d *skiffv1.Deployment) { d.Spec.Paused = pause }); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), qualified(k, name)+" "+done)
			return nil
		},
	}
}
