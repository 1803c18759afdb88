package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/manifest"
)

// kindNames maps what users type to a manifest kind, as kubectl does.
var kindNames = map[string]string{
	"pod": "Pod", "pods": "Pod", "po": "Pod",
	"node": "Node", "nodes": "Node", "no": "Node",
	"namespace": "Namespace", "namespaces": "Namespace", "ns": "Namespace",
}

func parseKind(s string) (string, error) {
	k, ok := kindNames[strings.ToLower(s)]
	if !ok {
		return "", fmt.Errorf("unknown kind %q: use pods, nodes or namespaces", s)
	}
	return k, nil
}

func newGetCmd(g *globals) *cobra.Command {
	var output string
	var all bool
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "List objects, or show one",
		Long:  "KIND is pods (po), nodes (no) or namespaces (ns).",
		Example: `  skiff get pods
  skiff get pod hello -o yaml
  skiff get nodes`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := parseKind(args[0])
			if err != nil {
				return err
			}
			switch output {
			case "table", "json", "yaml":
			default:
				return fmt.Errorf("-o: unsupported value %q: use table, json or yaml", output)
			}
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			ns := g.namespace
			if ns == "" && !all {
				ns = "default"
			}
			objs, err := fetch(cmd.Context(), newClients(g.server), kind, ns, name)
			if err != nil {
				return plain(err)
			}
			return printObjects(cmd.OutOrStdout(), kind, objs, output, name != "")
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	cmd.Flags().StringVarP(&g.namespace, "namespace", "n", "", "namespace (default \"default\")")
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list pods of every namespace")
	return cmd
}

func fetch(ctx context.Context, c *clients, kind, ns, name string) ([]proto.Message, error) {
	var out []proto.Message
	switch kind {
	case "Pod":
		if name != "" {
			r, err := c.pods.Get(ctx, connect.NewRequest(&skiffv1.GetPodRequest{Namespace: ns, Name: name}))
			if err != nil {
				return nil, err
			}
			return []proto.Message{r.Msg}, nil
		}
		r, err := c.pods.List(ctx, connect.NewRequest(&skiffv1.ListPodsRequest{Namespace: ns}))
		if err != nil {
			return nil, err
		}
		for _, p := range r.Msg.Items {
			out = append(out, p)
		}
	case "Node":
		if name != "" {
			r, err := c.nodes.Get(ctx, connect.NewRequest(&skiffv1.GetNodeRequest{Name: name}))
			if err != nil {
				return nil, err
			}
			return []proto.Message{r.Msg}, nil
		}
		r, err := c.nodes.List(ctx, connect.NewRequest(&skiffv1.ListNodesRequest{}))
		if err != nil {
			return nil, err
		}
		for _, n := range r.Msg.Items {
			out = append(out, n)
		}
	case "Namespace":
		if name != "" {
			r, err := c.namespaces.Get(ctx, connect.NewRequest(&skiffv1.GetNamespaceRequest{Name: name}))
			if err != nil {
				return nil, err
			}
			return []proto.Message{r.Msg}, nil
		}
		r, err := c.namespaces.List(ctx, connect.NewRequest(&skiffv1.ListNamespacesRequest{}))
		if err != nil {
			return nil, err
		}
		for _, n := range r.Msg.Items {
			out = append(out, n)
		}
	}
	return out, nil
}

func printObjects(w io.Writer, kind string, objs []proto.Message, output string, single bool) error {
	switch output {
	case "json", "yaml":
		for i, o := range objs {
			var b []byte
			var err error
			if output == "json" {
				b, err = manifest.JSON(o)
				b = append(b, '\n')
			} else {
				b, err = manifest.YAML(o)
				if i > 0 {
					b = append([]byte("---\n"), b...)
				}
			}
			if err != nil {
				return err
			}
			if _, err := w.Write(b); err != nil {
				return err
			}
		}
		return nil
	}
	if len(objs) == 0 {
		_, err := fmt.Fprintf(w, "No %ss found.\n", strings.ToLower(kind))
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	switch kind {
	case "Pod":
		fmt.Fprintln(tw, "NAME\tREADY\tSTATUS\tRESTARTS\tNODE\tAGE")
		for _, o := range objs {
			p := o.(*skiffv1.Pod)
			ready, restarts := 0, uint32(0)
			for _, cs := range p.GetStatus().GetContainerStatuses() {
				if cs.GetReady() {
					ready++
				}
				restarts += cs.GetRestartCount()
			}
			node := p.GetSpec().GetNodeName()
			if node == "" {
				node = "<none>"
			}
			fmt.Fprintf(tw, "%s\t%d/%d\t%s\t%d\t%s\t%s\n", p.Metadata.Name, ready, len(p.GetSpec().GetContainers()), podStatus(p), restarts, node, age(p.Metadata))
		}
	case "Node":
		fmt.Fprintln(tw, "NAME\tSTATUS\tRUNTIMES\tAGE\tVERSION")
		for _, o := range objs {
			n := o.(*skiffv1.Node)
			status := "NotReady"
			for _, c := range n.GetStatus().GetConditions() {
				if c.GetType() == "Ready" && c.GetStatus() == "True" {
					status = "Ready"
				}
			}
			if n.GetSpec().GetUnschedulable() {
				status += ",SchedulingDisabled"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.Metadata.Name, status, strings.Join(n.GetStatus().GetRuntimes(), ","), age(n.Metadata), n.GetStatus().GetAgentVersion())
		}
	case "Namespace":
		fmt.Fprintln(tw, "NAME\tSTATUS\tAGE")
		for _, o := range objs {
			n := o.(*skiffv1.Namespace)
			fmt.Fprintf(tw, "%s\t%s\t%s\n", n.Metadata.Name, n.GetStatus().GetPhase(), age(n.Metadata))
		}
	}
	return tw.Flush()
}

// podStatus is the STATUS column: a container's waiting reason while the pod
// waits on it (ErrImagePull, CrashLoopBackOff), else the pod's phase.
func podStatus(p *skiffv1.Pod) string {
	phase := p.GetStatus().GetPhase()
	if phase == "Pending" || phase == "Running" {
		for _, cs := range p.GetStatus().GetContainerStatuses() {
			if r := cs.GetState().GetWaiting().GetReason(); r != "" && r != "ContainerCreating" {
				return r
			}
		}
	}
	if phase == "" {
		return "Unknown"
	}
	return phase
}

func age(m *skiffv1.ObjectMeta) string {
	if m.GetCreationTimestamp() == nil {
		return "<unknown>"
	}
	d := time.Since(m.GetCreationTimestamp().AsTime())
	switch {
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
