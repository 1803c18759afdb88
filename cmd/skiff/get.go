package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
	"skiff.dev/skiff/control/api/manifest"
)

// getOptions are skiff get's flags.
type getOptions struct {
	output        string
	all           bool
	labels        string
	fields        string
	watch         bool
	noHeaders     bool
	namespaceFlag *string
}

var outputs = []string{"table", "wide", "json", "yaml", "name"}

func newGetCmd(g *globals) *cobra.Command {
	o := &getOptions{namespaceFlag: &g.namespace}
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "List objects, or show one",
		Long: `Get lists the objects of a kind, or shows one by name, as kubectl get does.

KIND is one of ` + strings.Join(kindHelp(), ", ") + `.
-o json and -o yaml print one object, or a list as one List object;
-w prints the objects, then a line for each change until interrupted.`,
		Example: `  skiff get pods
  skiff get pods -l app=web -o wide
  skiff get pod hello -o yaml
  skiff get pods -w
  skiff get events -A`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: completeKindAndName(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := kinds.Lookup(args[0])
			if err != nil {
				return err
			}
			if !contains(outputs, o.output) {
				return fmt.Errorf("-o: unsupported value %q: use %s", o.output, strings.Join(outputs, ", "))
			}
			name := ""
			if len(args) == 2 {
				if name = args[1]; name == "" {
					return fmt.Errorf("name required: NAME is empty; leave it out to list every %s", k.Singular)
				}
				if o.labels != "" || o.fields != "" {
					return errors.New("-l and --field-selector select from a list: leave out NAME")
				}
			}
			ns := namespaceFor(k, g.namespace, o.all)
			c, err := g.clients()
			if err != nil {
				return err
			}
			return runGet(cmd.Context(), cmd.OutOrStdout(), c, k, ns, name, o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.output, "output", "o", "table", "output format: "+strings.Join(outputs, ", "))
	f.StringVarP(&g.namespace, "namespace", "n", "", "namespace (default \"default\")")
	f.BoolVarP(&o.all, "all-namespaces", "A", false, "list the objects of every namespace")
	f.StringVarP(&o.labels, "selector", "l", "", "label selector: app=web, tier!=db, env in (a,b), !canary")
	f.StringVar(&o.fields, "field-selector", "", "field selector: spec.nodeName=node-1, status.phase!=Running")
	f.BoolVarP(&o.watch, "watch", "w", false, "after printing, watch for changes and print each")
	f.BoolVar(&o.noHeaders, "no-headers", false, "print the table without its header")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(outputs, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// namespaceFor is the namespace a command acts in: none for a cluster-scoped
// kind or with -A, else -n or "default".
func namespaceFor(k *kinds.Kind, ns string, all bool) string {
	switch {
	case !k.Namespaced || all:
		return ""
	case ns == "":
		return "default"
	}
	return ns
}

func runGet(ctx context.Context, w io.Writer, c *clients, k *kinds.Kind, ns, name string, o *getOptions) error {
	client := c.of(k)
	var objs []kinds.Object
	var rev uint64
	if name != "" {
		obj, err := client.Get(ctx, ns, name)
		if err != nil {
			return plain(err)
		}
		objs, rev = []kinds.Object{obj}, obj.GetMetadata().GetResourceVersion()
		if o.fields == "" {
			o.fields = "metadata.name=" + name
		}
	} else {
		var err error
		objs, rev, err = client.List(ctx, &skiffv1.ListRequest{Namespace: ns, LabelSelector: o.labels, FieldSelector: o.fields})
		if err != nil {
			return plain(err)
		}
	}
	p := &printer{w: w, k: k, output: o.output, withNamespace: k.Namespaced && ns == "", noHeaders: o.noHeaders}
	if o.watch && (o.output == "json" || o.output == "yaml") {
		for _, obj := range objs {
			if err := p.print([]kinds.Object{obj}, true); err != nil {
				return err
			}
		}
	} else if err := p.print(objs, name != "" || o.watch); err != nil {
		return err
	}
	if !o.watch {
		return nil
	}
	st, err := c.watching(k).Watch(ctx, &skiffv1.WatchRequest{Namespace: ns, LabelSelector: o.labels, FieldSelector: o.fields, ResourceVersion: rev})
	if err != nil {
		return plain(err)
	}
	defer st.Close()
	p.noHeaders = p.noHeaders || len(objs) > 0
	if err := p.follow(st); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// follow prints each change a watch brings, one object at a time, until
// the stream ends. A bookmark is no change: it prints nothing.
func (p *printer) follow(st kinds.Stream) error {
	for st.Receive() {
		typ, obj := st.Event()
		if typ == skiffv1.EventType_EVENT_TYPE_BOOKMARK {
			continue
		}
		if err := p.print([]kinds.Object{obj}, true); err != nil {
			return err
		}
		p.noHeaders = true
	}
	if err := st.Err(); err != nil {
		return plain(err)
	}
	return nil
}

// printer prints objects as `skiff get` does.
type printer struct {
	w             io.Writer
	k             *kinds.Kind
	output        string
	withNamespace bool
	noHeaders     bool
	now           func() time.Time
}

// print writes objs; single prints one object alone rather than as a List
// (json, yaml) and says nothing when there is none.
func (p *printer) print(objs []kinds.Object, single bool) error {
	msgs := make([]proto.Message, len(objs))
	for i, o := range objs {
		msgs[i] = o
	}
	switch p.output {
	case "json", "yaml":
		var b []byte
		var err error
		switch {
		case single && len(msgs) == 1 && p.output == "json":
			b, err = manifest.JSON(msgs[0])
		case single && len(msgs) == 1:
			b, err = manifest.YAML(msgs[0])
		case single && len(msgs) == 0:
			return nil
		case p.output == "json":
			b, err = manifest.ListJSON(msgs)
		default:
			b, err = manifest.ListYAML(msgs)
		}
		if err != nil {
			return err
		}
		if p.output == "json" {
			b = append(b, '\n')
		} else if single {
			b = append([]byte("---\n"), b...)
		}
		_, err = p.w.Write(b)
		return err
	case "name":
		for _, o := range objs {
			if _, err := fmt.Fprintln(p.w, qualified(p.k, o.GetMetadata().GetName())); err != nil {
				return err
			}
		}
		return nil
	}
	if len(objs) == 0 {
		if single {
			return nil
		}
		_, err := fmt.Fprintf(p.w, "No %s found.\n", p.k.Plural)
		return err
	}
	return p.table(objs)
}

func (p *printer) table(objs []kinds.Object) error {
	now := time.Now()
	if p.now != nil {
		now = p.now()
	}
	var cols []kinds.Column
	for _, c := range p.k.Columns {
		if !c.Wide || p.output == "wide" {
			cols = append(cols, c)
		}
	}
	if p.k.Order != nil {
		objs = slices.Clone(objs)
		slices.SortStableFunc(objs, p.k.Order)
	}
	tw := tabwriter.NewWriter(p.w, 0, 8, 3, ' ', 0)
	if !p.noHeaders {
		var h []string
		if p.withNamespace {
			h = append(h, "NAMESPACE")
		}
		for _, c := range cols {
			h = append(h, c.Header)
		}
		fmt.Fprintln(tw, strings.Join(h, "\t"))
	}
	for _, o := range objs {
		var row []string
		if p.withNamespace {
			row = append(row, o.GetMetadata().GetNamespace())
		}
		for _, c := range cols {
			row = append(row, c.Value(o, now))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

func kindHelp() []string {
	var out []string
	for _, k := range kinds.All() {
		s := k.Plural
		if len(k.Short) > 0 {
			s += " (" + strings.Join(k.Short, ", ") + ")"
		}
		out = append(out, s)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// completeKindAndName completes a kind as the first argument and the names
// of that kind's objects as the second, asking the server.
func completeKindAndName(g *globals) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		switch len(args) {
		case 0:
			return kinds.Names(), cobra.ShellCompDirectiveNoFileComp
		case 1:
			k, err := kinds.Lookup(args[0])
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
			defer cancel()
			c, err := g.clients()
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			objs, _, err := c.of(k).List(ctx, &skiffv1.ListRequest{Namespace: namespaceFor(k, g.namespace, false)})
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			names := make([]string, 0, len(objs))
			for _, o := range objs {
				names = append(names, o.GetMetadata().GetName())
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
}

// plain turns a Connect error into its message alone, which already names
// the object, the field and the reason.
func plain(err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		// No response metadata: the request never reached a server.
		if ce.Code() == connect.CodeUnavailable && len(ce.Meta()) == 0 {
			return fmt.Errorf("cannot reach the skiff server (%s): is `skiff dev` running? Set --server or SKIFF_SERVER", ce.Message())
		}
		return fmt.Errorf("%s", ce.Message())
	}
	return err
}
