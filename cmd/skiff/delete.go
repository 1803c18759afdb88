package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

// deleteOptions are skiff delete's flags.
type deleteOptions struct {
	files       []string
	gracePeriod int64
	force       bool
	wait        bool
	timeout     time.Duration
}

func newDeleteCmd(g *globals) *cobra.Command {
	o := &deleteOptions{}
	cmd := &cobra.Command{
		Use:   "delete (KIND NAME... | -f FILE)",
		Short: "Delete objects; a pod's containers get its grace period to stop",
		Long: `Delete removes objects by kind and name, or those a manifest file names.

A pod bound to a node is stopped by that node first: its containers get the
pod's terminationGracePeriodSeconds (30 unless the spec says otherwise) to
exit by themselves, are then killed, and the pod goes once the node has
confirmed. --grace-period overrides the pod's own; --grace-period 0 is taken
as 1 unless --force is given too, which removes the pod from the API at once
without waiting for the node (as kubectl does). Delete waits until the
objects are gone; --wait=false returns at once.`,
		Example: `  skiff delete pod hello
  skiff delete -f examples/hello/pod.yaml
  skiff delete pod hello --grace-period 5
  skiff delete pod stuck --grace-period 0 --force`,
		ValidArgsFunction: completeKindAndName(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			targets, err := deleteTargets(cmd, o, g.namespace, args)
			if err != nil {
				return err
			}
			grace, err := o.grace()
			if err != nil {
				return err
			}
			if o.force {
				fmt.Fprintln(cmd.ErrOrStderr(), "Warning: immediate deletion does not wait for the node to confirm that the containers have stopped; they may keep running for a while")
			}
			c, err := g.clients()
			if err != nil {
				return err
			}
			for _, t := range targets {
				if err := deleteOne(cmd.Context(), cmd.OutOrStdout(), c, t, grace, o); err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVarP(&o.files, "filename", "f", nil, "delete the objects this manifest file, directory or - names")
	f.StringVarP(&g.namespace, "namespace", "n", "", "namespace (default \"default\")")
	f.Int64Var(&o.gracePeriod, "grace-period", -1, "seconds a pod's containers get to stop; -1 uses the pod's own")
	f.BoolVar(&o.force, "force", false, "remove from the API at once, without waiting for the node (with --grace-period 0)")
	f.BoolVar(&o.wait, "wait", true, "wait until the objects are gone")
	f.DurationVar(&o.timeout, "timeout", 0, "how long to wait; 0 waits for the grace period and a minute more")
	return cmd
}

// target is one object to delete.
type target struct {
	k        *kinds.Kind
	ns, name string
}

func deleteTargets(cmd *cobra.Command, o *deleteOptions, ns string, args []string) ([]target, error) {
	if len(o.files) > 0 {
		if len(args) > 0 {
			return nil, errors.New("give either KIND NAME... or -f FILE, not both")
		}
		objs, err := readManifests(o.files, cmd.InOrStdin())
		if err != nil {
			return nil, err
		}
		var out []target
		for _, obj := range objs {
			m := obj.Msg.GetMetadata()
			objNS := m.GetNamespace()
			if objNS == "" {
				objNS = ns
			}
			if m.GetName() == "" {
				return nil, fmt.Errorf("%s: metadata.name: required value", obj.Source)
			}
			out = append(out, target{obj.Kind, namespaceFor(obj.Kind, objNS, false), m.GetName()})
		}
		return out, nil
	}
	if len(args) < 2 {
		return nil, errors.New("name required: give KIND and at least one NAME, or -f FILE")
	}
	k, err := kinds.Lookup(args[0])
	if err != nil {
		return nil, err
	}
	var out []target
	for _, name := range args[1:] {
		if name == "" {
			return nil, errors.New("name required: a NAME is empty")
		}
		out = append(out, target{k, namespaceFor(k, ns, false), name})
	}
	return out, nil
}

// grace is the grace period to ask for, nil for the object's own, by
// kubectl's rules.
func (o *deleteOptions) grace() (*int64, error) {
	switch {
	case o.gracePeriod < -1:
		return nil, fmt.Errorf("--grace-period: invalid value %d: must be 0 or more (-1, the default, uses the pod's own)", o.gracePeriod)
	case o.force && o.gracePeriod <= 0:
		return proto.Int64(0), nil
	case o.gracePeriod == 0:
		return proto.Int64(1), nil // immediate deletion only with --force
	case o.gracePeriod > 0:
		return proto.Int64(o.gracePeriod), nil
	}
	return nil, nil
}

func deleteOne(ctx context.Context, w io.Writer, c *clients, t target, grace *int64, o *deleteOptions) error {
	client := c.of(t.k)
	obj, err := client.Delete(ctx, &skiffv1.DeleteRequest{Namespace: t.ns, Name: t.name, GracePeriodSeconds: grace})
	if err != nil {
		return plain(err)
	}
	if o.wait && obj.GetMetadata().GetDeletionTimestamp() != nil {
		if err := waitGone(ctx, c, t, obj, o.timeout); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "%s %q deleted\n", t.k.Singular, t.name)
	return nil
}

// waitGone waits, through a watch, until the object is removed.
func waitGone(ctx context.Context, c *clients, t target, obj kinds.Object, timeout time.Duration) error {
	if timeout == 0 {
		timeout = time.Duration(obj.GetMetadata().GetDeletionGracePeriodSeconds())*time.Second + time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cur, err := c.of(t.k).Get(ctx, t.ns, t.name)
	if connect.CodeOf(err) == connect.CodeNotFound {
		return nil
	}
	if err != nil {
		return plain(err)
	}
	if cur.GetMetadata().GetUid() != obj.GetMetadata().GetUid() {
		return nil // gone, and another of the name made since
	}
	st, err := c.watching(t.k).Watch(ctx, &skiffv1.WatchRequest{
		Namespace: t.ns, FieldSelector: "metadata.name=" + t.name, ResourceVersion: cur.GetMetadata().GetResourceVersion(),
	})
	if err != nil {
		return plain(err)
	}
	defer st.Close()
	for st.Receive() {
		// Only the object's DELETED counts; a bookmark (never asked for
		// here) or any other event is not its removal.
		if typ, o := st.Event(); typ == skiffv1.EventType_EVENT_TYPE_DELETED && o.GetMetadata().GetUid() == obj.GetMetadata().GetUid() {
			return nil
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s %q is still being deleted after %s (its node has not confirmed; see skiff describe)", t.k.Singular, t.name, timeout)
	}
	return plain(st.Err())
}
