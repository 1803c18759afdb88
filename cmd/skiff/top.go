package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

func newTopCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Show the CPU and memory use of running pods",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(newTopPodsCmd(g))
	return cmd
}

// topOptions are the flags of skiff top pods.
type topOptions struct {
	all, containers bool
	labels, sortBy  string
}

func newTopPodsCmd(g *globals) *cobra.Command {
	var o topOptions
	cmd := &cobra.Command{
		Use:     "pods [NAME]",
		Aliases: []string{"pod", "po"},
		Short:   "Show the CPU and memory use of running pods, as kubectl top pods",
		Long: `Show the CPU (in millicores) and memory (working set, in MiB) of running
pods, measured by their nodes: the server asks the agent of each pod's
node, which reads the CRI stats of the pod's running containers. For a
Wasm container, memory is the size of its linear memory and CPU the time
of the thread running its guest.

CPU is a rate over the last second or more: the first call that sees a
container waits about a second for a second sample. A pod that is not
running yet (or any more) is not shown. A node whose agent does not
answer is named on stderr, and its pods are not shown.`,
		Example: `  skiff top pods
  NAME     CPU(cores)   MEMORY(bytes)
  web      3m           3Mi

  skiff top pods web --containers
  skiff top pods -A --sort-by memory
  skiff top pods -l app=web -n shop`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &skiffv1.TopPodsRequest{Namespace: g.namespace, AllNamespaces: o.all, LabelSelector: o.labels}
			if len(args) == 1 {
				if req.Name = args[0]; req.Name == "" {
					return errors.New("name required: NAME is empty; leave it out to show every pod")
				}
				if o.all {
					return errors.New("-A shows every namespace: leave out NAME, or name the pod's namespace with -n")
				}
			}
			switch o.sortBy {
			case "", "cpu", "memory":
			default:
				return fmt.Errorf("--sort-by: must be cpu or memory, got %q", o.sortBy)
			}
			c, err := g.clients()
			if err != nil {
				return err
			}
			res, err := c.pods.Top(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return plain(err)
			}
			for _, n := range res.Msg.GetUnreachableNodes() {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: no metrics from node %s: %s\n", n.GetNode(), n.GetReason())
			}
			pods := res.Msg.GetPods()
			if len(pods) == 0 {
				if req.Name != "" {
					return fmt.Errorf("metrics not available yet for pod %q", req.Name)
				}
				where := "in namespace " + namespaceOr(g.namespace)
				if o.all {
					where = "in any namespace"
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "No running pods with metrics %s.\n", where)
				return nil
			}
			return printTop(cmd.OutOrStdout(), pods, o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&g.namespace, "namespace", "n", "", "namespace (default \"default\")")
	f.BoolVarP(&o.all, "all-namespaces", "A", false, "show the pods of every namespace")
	f.StringVarP(&o.labels, "selector", "l", "", "label selector: app=web, tier!=db, env in (a,b), !canary")
	f.BoolVar(&o.containers, "containers", false, "show each container of the pods")
	f.StringVar(&o.sortBy, "sort-by", "", "sort by cpu or memory, highest first (default: by namespace and name)")
	_ = cmd.RegisterFlagCompletionFunc("sort-by", cobra.FixedCompletions([]string{"cpu", "memory"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func namespaceOr(ns string) string {
	if ns == "" {
		return "default"
	}
	return ns
}

// topRow is one line of skiff top pods: a pod, or with --containers one
// container of it.
type topRow struct {
	ns, pod, container string
	nanoCores, bytes   int64
}

// printTop prints the pods' metrics as kubectl top pods does: CPU in
// millicores rounded up, memory in MiB rounded down, a pod's figures the
// sum of its containers'.
func printTop(w io.Writer, pods []*skiffv1.PodMetrics, o topOptions) error {
	var rows []topRow
	for _, p := range pods {
		pr := topRow{ns: p.GetNamespace(), pod: p.GetName()}
		for _, c := range p.GetContainers() {
			if o.containers {
				rows = append(rows, topRow{ns: pr.ns, pod: pr.pod, container: c.GetName(), nanoCores: c.GetCpuNanoCores(), bytes: c.GetMemoryBytes()})
			}
			pr.nanoCores += c.GetCpuNanoCores()
			pr.bytes += c.GetMemoryBytes()
		}
		if !o.containers {
			rows = append(rows, pr)
		}
	}
	switch o.sortBy {
	case "cpu":
		slices.SortStableFunc(rows, func(a, b topRow) int { return cmp.Compare(b.nanoCores, a.nanoCores) })
	case "memory":
		slices.SortStableFunc(rows, func(a, b topRow) int { return cmp.Compare(b.bytes, a.bytes) })
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	var h []string
	if o.all {
		h = append(h, "NAMESPACE")
	}
	if o.containers {
		h = append(h, "POD")
	}
	fmt.Fprintln(tw, strings.Join(append(h, "NAME", "CPU(cores)", "MEMORY(bytes)"), "\t"))
	for _, r := range rows {
		var row []string
		if o.all {
			row = append(row, r.ns)
		}
		row = append(row, r.pod)
		if o.containers {
			row = append(row, r.container)
		}
		row = append(row, fmt.Sprintf("%dm", (r.nanoCores+1e6-1)/1e6), fmt.Sprintf("%dMi", r.bytes>>20))
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}
