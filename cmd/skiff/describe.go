package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

func newDescribeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "describe KIND NAME",
		Short: "Show an object in detail, with its events",
		Long: `Describe shows one object as kubectl describe does: for a pod its spec in
short, its status, conditions and container states, and the events about it
(why it is Pending, what happened to it). Other kinds show their metadata
and events.`,
		Example:           "  skiff describe pod hello",
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: completeKindAndName(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := kinds.Lookup(args[0])
			if err != nil {
				return err
			}
			if args[1] == "" {
				return fmt.Errorf("name required: NAME is empty")
			}
			c, err := g.clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			obj, err := c.of(k).Get(ctx, namespaceFor(k, g.namespace, false), args[1])
			if err != nil {
				return plain(err)
			}
			evs, err := eventsAbout(ctx, c, obj)
			if err != nil {
				return plain(err)
			}
			var related kinds.Object
			if k == kinds.Service { // its endpoints, as kubectl shows them
				m := obj.GetMetadata()
				related, err = c.of(kinds.Endpoints).Get(ctx, m.GetNamespace(), m.GetName())
				if err != nil && connect.CodeOf(err) != connect.CodeNotFound {
					return plain(err)
				}
			}
			return describe(cmd.OutOrStdout(), k, obj, related, evs, time.Now())
		},
	}
	cmd.Flags().StringVarP(&g.namespace, "namespace", "n", "", "namespace (default \"default\")")
	return cmd
}

// eventsAbout lists the events whose subject is obj, oldest first.
func eventsAbout(ctx context.Context, c *clients, obj kinds.Object) ([]*skiffv1.Event, error) {
	ns := obj.GetMetadata().GetNamespace()
	if ns == "" {
		ns = "default"
	}
	objs, _, err := c.of(kinds.Event).List(ctx, &skiffv1.ListRequest{
		Namespace: ns, FieldSelector: "involvedObject.uid=" + obj.GetMetadata().GetUid(),
	})
	if err != nil {
		return nil, err
	}
	out := make([]*skiffv1.Event, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*skiffv1.Event))
	}
	sort.SliceStable(out, func(i, j int) bool {
		return out[i].GetLastTimestamp().AsTime().Before(out[j].GetLastTimestamp().AsTime())
	})
	return out, nil
}

// describe writes obj with evs, the events about it; related is what else
// it shows (a service's Endpoints), nil when there is none.
func describe(w io.Writer, k *kinds.Kind, obj, related kinds.Object, evs []*skiffv1.Event, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
	m := obj.GetMetadata()
	line := func(indent int, key, format string, args ...any) {
		fmt.Fprintf(tw, "%s%s:\t%s\n", strings.Repeat("  ", indent), key, fmt.Sprintf(format, args...))
	}
	line(0, "Name", "%s", m.GetName())
	if k.Namespaced {
		line(0, "Namespace", "%s", m.GetNamespace())
	}
	line(0, "Labels", "%s", pairs(m.GetLabels()))
	line(0, "Annotations", "%s", pairs(m.GetAnnotations()))
	line(0, "Created", "%s", when(m.GetCreationTimestamp(), now))
	if ts := m.GetDeletionTimestamp(); ts != nil {
		line(0, "Terminating", "since %s (grace period %ds)", ts.AsTime().Add(-time.Duration(m.GetDeletionGracePeriodSeconds())*time.Second).Format(time.RFC3339), m.GetDeletionGracePeriodSeconds())
	}
	if len(m.GetFinalizers()) > 0 {
		line(0, "Finalizers", "%s", strings.Join(m.GetFinalizers(), ", "))
	}
	if p, ok := obj.(*skiffv1.Pod); ok {
		describePod(tw, line, p, now)
	}
	if n, ok := obj.(*skiffv1.Node); ok {
		line(0, "Status", "%s", kinds.NodeStatus(n))
		line(0, "Runtimes", "%s", strings.Join(n.GetStatus().GetRuntimes(), ", "))
		line(0, "Capacity", "%s", pairs(n.GetStatus().GetCapacity()))
		line(0, "Unschedulable", "%t", n.GetSpec().GetUnschedulable())
		taints := n.GetSpec().GetTaints()
		if len(taints) == 0 {
			line(0, "Taints", "<none>")
		}
		for i, t := range taints {
			if i == 0 {
				line(0, "Taints", "%s", taintString(t))
				continue
			}
			fmt.Fprintf(tw, "\t%s\n", taintString(t))
		}
		conditions(tw, n.GetStatus().GetConditions())
	}
	if s, ok := obj.(*skiffv1.Service); ok {
		ep, _ := related.(*skiffv1.Endpoints)
		describeService(line, s, ep)
	}
	if d, ok := obj.(*skiffv1.Deployment); ok {
		describeDeployment(tw, line, d)
	}
	if rs, ok := obj.(*skiffv1.ReplicaSet); ok {
		describeReplicaSet(tw, line, rs)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "Events:")
	if len(evs) == 0 {
		_, err := fmt.Fprintln(w, "  <none>")
		return err
	}
	ew := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(ew, "  Type\tReason\tAge\tFrom\tMessage")
	fmt.Fprintln(ew, "  ----\t------\t---\t----\t-------")
	for _, e := range evs {
		age := kinds.Age(e.GetLastTimestamp().AsTime(), now)
		if e.GetCount() > 1 {
			age = fmt.Sprintf("%s (x%d over %s)", age, e.GetCount(), kinds.Age(e.GetFirstTimestamp().AsTime(), now))
		}
		from := e.GetSource().GetComponent()
		if h := e.GetSource().GetHost(); h != "" {
			from += ", " + h
		}
		fmt.Fprintf(ew, "  %s\t%s\t%s\t%s\t%s\n", e.GetType(), e.GetReason(), age, from, e.GetMessage())
	}
	return ew.Flush()
}

func describePod(tw io.Writer, line func(int, string, string, ...any), p *skiffv1.Pod, now time.Time) {
	s, st := p.GetSpec(), p.GetStatus()
	line(0, "Node", "%s", orNone(s.GetNodeName()))
	line(0, "Runtime Class", "%s", orDefault(s.GetRuntimeClassName(), "wasm"))
	line(0, "Restart Policy", "%s", s.GetRestartPolicy())
	line(0, "Grace Period", "%ds", s.GetTerminationGracePeriodSeconds())
	line(0, "Start Time", "%s", when(st.GetStartTime(), now))
	line(0, "Status", "%s", kinds.PodStatus(p))
	if st.GetReason() != "" {
		line(0, "Reason", "%s", st.GetReason())
	}
	if st.GetMessage() != "" {
		line(0, "Message", "%s", st.GetMessage())
	}
	fmt.Fprintln(tw, "Containers:")
	statuses := map[string]*skiffv1.ContainerStatus{}
	for _, cs := range st.GetContainerStatuses() {
		statuses[cs.GetName()] = cs
	}
	for _, c := range s.GetContainers() {
		fmt.Fprintf(tw, "  %s:\n", c.GetName())
		line(2, "Image", "%s", c.GetImage())
		if len(c.GetCommand()) > 0 {
			line(2, "Command", "%s", strings.Join(c.GetCommand(), " "))
		}
		if len(c.GetArgs()) > 0 {
			line(2, "Args", "%s", strings.Join(c.GetArgs(), " "))
		}
		cs := statuses[c.GetName()]
		if cs == nil {
			line(2, "State", "Waiting")
			continue
		}
		containerState(line, "State", cs.GetState(), now)
		if cs.GetLastState().GetTerminated() != nil {
			containerState(line, "Last State", cs.GetLastState(), now)
		}
		line(2, "Ready", "%t", cs.GetReady())
		line(2, "Restart Count", "%d", cs.GetRestartCount())
		if len(c.GetEnv()) > 0 {
			fmt.Fprintf(tw, "    Environment:\n")
			for _, e := range c.GetEnv() {
				line(3, e.GetName(), "%s", e.GetValue())
			}
		}
	}
	conditions(tw, st.GetConditions())
}

func containerState(line func(int, string, string, ...any), label string, s *skiffv1.ContainerState, now time.Time) {
	switch {
	case s.GetRunning() != nil:
		line(2, label, "Running")
		line(3, "Started", "%s", when(s.GetRunning().GetStartedAt(), now))
	case s.GetTerminated() != nil:
		t := s.GetTerminated()
		line(2, label, "Terminated")
		line(3, "Reason", "%s", t.GetReason())
		if t.GetMessage() != "" {
			line(3, "Message", "%s", t.GetMessage())
		}
		line(3, "Exit Code", "%d", t.GetExitCode())
		line(3, "Started", "%s", when(t.GetStartedAt(), now))
		line(3, "Finished", "%s", when(t.GetFinishedAt(), now))
	default:
		line(2, label, "Waiting")
		if r := s.GetWaiting().GetReason(); r != "" {
			line(3, "Reason", "%s", r)
		}
		if m := s.GetWaiting().GetMessage(); m != "" {
			line(3, "Message", "%s", m)
		}
	}
}

func conditions(tw io.Writer, cs []*skiffv1.Condition) {
	if len(cs) == 0 {
		return
	}
	fmt.Fprintln(tw, "Conditions:")
	fmt.Fprintln(tw, "  Type\tStatus\tReason\tMessage")
	for _, c := range cs {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.GetType(), c.GetStatus(), c.GetReason(), c.GetMessage())
	}
}

func pairs(m map[string]string) string {
	if len(m) == 0 {
		return "<none>"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+m[k])
	}
	return strings.Join(out, ", ")
}

func when(ts *timestamppb.Timestamp, now time.Time) string {
	if ts == nil {
		return "<none>"
	}
	return fmt.Sprintf("%s (%s ago)", ts.AsTime().Format(time.RFC3339), kinds.Age(ts.AsTime(), now))
}

func orNone(s string) string { return orDefault(s, "<none>") }

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// describeService shows a service as kubectl does: its type, selector and
// address, then each port with its target, node port and endpoints.
func describeService(line func(int, string, string, ...any), s *skiffv1.Service, ep *skiffv1.Endpoints) {
	sp := s.GetSpec()
	line(0, "Type", "%s", sp.GetType())
	line(0, "Selector", "%s", pairs(sp.GetSelector()))
	line(0, "IP", "%s", orNone(sp.GetClusterIp()))
	for _, p := range sp.GetPorts() {
		name := orDefault(p.GetName(), "<unset>")
		line(0, "Port", "%s  %d/%s", name, p.GetPort(), p.GetProtocol())
		line(0, "TargetPort", "%s/%s", p.GetTargetPort(), p.GetProtocol())
		if p.GetNodePort() != 0 {
			line(0, "NodePort", "%s  %d/%s", name, p.GetNodePort(), p.GetProtocol())
		}
		line(0, "Endpoints", "%s", endpointsOf(ep, p.GetName()))
	}
}

// endpointsOf lists the ready ip:port of the endpoints port named name.
func endpointsOf(ep *skiffv1.Endpoints, name string) string {
	var all []string
	for _, ss := range ep.GetSubsets() {
		for _, p := range ss.GetPorts() {
			if p.GetName() != name {
				continue
			}
			for _, a := range ss.GetAddresses() {
				all = append(all, net.JoinHostPort(a.GetIp(), strconv.Itoa(int(p.GetPort()))))
			}
		}
	}
	if len(all) > 10 {
		return strings.Join(all[:10], ",") + fmt.Sprintf(" + %d more...", len(all)-10)
	}
	return orNone(strings.Join(all, ","))
}

// describeDeployment shows a deployment as kubectl does: selector,
// replicas, strategy, template and conditions.
func describeDeployment(tw io.Writer, line func(int, string, string, ...any), d *skiffv1.Deployment) {
	s, st := d.GetSpec(), d.GetStatus()
	line(0, "Selector", "%s", orNone(kinds.LabelSelectorString(s.GetSelector())))
	line(0, "Replicas", "%d desired | %d updated | %d total | %d available | %d unavailable",
		kinds.Replicas(s.Replicas), st.GetUpdatedReplicas(), st.GetReplicas(), st.GetAvailableReplicas(), st.GetUnavailableReplicas())
	line(0, "StrategyType", "%s", s.GetStrategy().GetType())
	line(0, "MinReadySeconds", "%d", s.GetMinReadySeconds())
	if ru := s.GetStrategy().GetRollingUpdate(); ru != nil {
		line(0, "RollingUpdateStrategy", "%s max unavailable, %s max surge", ru.GetMaxUnavailable(), ru.GetMaxSurge())
	}
	if s.GetPaused() {
		line(0, "Paused", "true")
	}
	podTemplate(tw, line, s.GetTemplate())
	conditions(tw, st.GetConditions())
}

// describeReplicaSet shows a ReplicaSet as kubectl does: selector, owner,
// replicas and pods status, template.
func describeReplicaSet(tw io.Writer, line func(int, string, string, ...any), rs *skiffv1.ReplicaSet) {
	s, st := rs.GetSpec(), rs.GetStatus()
	line(0, "Selector", "%s", orNone(kinds.LabelSelectorString(s.GetSelector())))
	for _, r := range rs.GetMetadata().GetOwnerReferences() {
		if r.GetController() {
			line(0, "Controlled By", "%s/%s", r.GetKind(), r.GetName())
		}
	}
	line(0, "Replicas", "%d current / %d desired", st.GetReplicas(), kinds.Replicas(s.Replicas))
	line(0, "Pods Status", "%d Ready / %d Available", st.GetReadyReplicas(), st.GetAvailableReplicas())
	podTemplate(tw, line, s.GetTemplate())
	conditions(tw, st.GetConditions())
}

func podTemplate(tw io.Writer, line func(int, string, string, ...any), t *skiffv1.PodTemplateSpec) {
	fmt.Fprintln(tw, "Pod Template:")
	line(1, "Labels", "%s", pairs(t.GetMetadata().GetLabels()))
	if len(t.GetMetadata().GetAnnotations()) > 0 {
		line(1, "Annotations", "%s", pairs(t.GetMetadata().GetAnnotations()))
	}
	fmt.Fprintln(tw, "  Containers:")
	for _, c := range t.GetSpec().GetContainers() {
		fmt.Fprintf(tw, "   %s:\n", c.GetName())
		line(2, "Image", "%s", c.GetImage())
		for _, e := range c.GetEnv() {
			line(2, "Env "+e.GetName(), "%s", e.GetValue())
		}
	}
}
