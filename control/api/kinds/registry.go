package kinds

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

// The kinds skiff serves. Each is one Register call.
var (
	Namespace = Register[skiffv1.Namespace, skiffv1.NamespaceList, skiffv1.NamespaceWatchEvent](Kind{
		Version: "v1", Kind: "Namespace", Plural: "namespaces", Singular: "namespace", Short: []string{"ns"},
		Fields: map[string]func(Object) string{
			"status.phase": func(o Object) string { return o.(*skiffv1.Namespace).GetStatus().GetPhase() },
		},
		Columns: []Column{
			nameColumn,
			{Header: "STATUS", Value: func(o Object, _ time.Time) string {
				if o.GetMetadata().GetDeletionTimestamp() != nil {
					return "Terminating"
				}
				return o.(*skiffv1.Namespace).GetStatus().GetPhase()
			}},
			ageColumn,
		},
	}, skiffv1connect.NewNamespaceServiceClient, skiffv1connect.NewNamespaceServiceHandler)

	Node = Register[skiffv1.Node, skiffv1.NodeList, skiffv1.NodeWatchEvent](Kind{
		Version: "v1", Kind: "Node", Plural: "nodes", Singular: "node", Short: []string{"no"},
		Fields: map[string]func(Object) string{
			"spec.unschedulable": func(o Object) string {
				return strconv.FormatBool(o.(*skiffv1.Node).GetSpec().GetUnschedulable())
			},
		},
		Columns: []Column{
			nameColumn,
			{Header: "STATUS", Value: func(o Object, _ time.Time) string { return NodeStatus(o.(*skiffv1.Node)) }},
			{Header: "RUNTIMES", Value: func(o Object, _ time.Time) string {
				return strings.Join(o.(*skiffv1.Node).GetStatus().GetRuntimes(), ",")
			}},
			ageColumn,
			{Header: "VERSION", Value: func(o Object, _ time.Time) string { return o.(*skiffv1.Node).GetStatus().GetAgentVersion() }},
		},
	}, skiffv1connect.NewNodeServiceClient, skiffv1connect.NewNodeServiceHandler)

	Pod = Register[skiffv1.Pod, skiffv1.PodList, skiffv1.PodWatchEvent](Kind{
		Version: "v1", Kind: "Pod", Plural: "pods", Singular: "pod", Short: []string{"po"}, Namespaced: true,
		Fields: map[string]func(Object) string{
			"spec.nodeName": func(o Object) string { return o.(*skiffv1.Pod).GetSpec().GetNodeName() },
			"status.phase":  func(o Object) string { return o.(*skiffv1.Pod).GetStatus().GetPhase() },
		},
		Columns: []Column{
			nameColumn,
			{Header: "READY", Value: func(o Object, _ time.Time) string {
				p := o.(*skiffv1.Pod)
				ready := 0
				for _, cs := range p.GetStatus().GetContainerStatuses() {
					if cs.GetReady() {
						ready++
					}
				}
				return fmt.Sprintf("%d/%d", ready, len(p.GetSpec().GetContainers()))
			}},
			{Header: "STATUS", Value: func(o Object, _ time.Time) string { return PodStatus(o.(*skiffv1.Pod)) }},
			{Header: "RESTARTS", Value: func(o Object, _ time.Time) string {
				var n uint32
				for _, cs := range o.(*skiffv1.Pod).GetStatus().GetContainerStatuses() {
					n += cs.GetRestartCount()
				}
				return strconv.FormatUint(uint64(n), 10)
			}},
			ageColumn,
			{Header: "IP", Wide: true, Value: func(o Object, _ time.Time) string {
				return orNone(o.(*skiffv1.Pod).GetStatus().GetPodIp())
			}},
			{Header: "NODE", Wide: true, Value: func(o Object, _ time.Time) string {
				return orNone(o.(*skiffv1.Pod).GetSpec().GetNodeName())
			}},
		},
	}, skiffv1connect.NewPodServiceClient, skiffv1connect.NewPodServiceHandler)

	Service = Register[skiffv1.Service, skiffv1.ServiceList, skiffv1.ServiceWatchEvent](Kind{
		Version: "v1", Kind: "Service", Plural: "services", Singular: "service", Short: []string{"svc"}, Namespaced: true,
		Fields: map[string]func(Object) string{
			"spec.type":      func(o Object) string { return o.(*skiffv1.Service).GetSpec().GetType() },
			"spec.clusterIP": func(o Object) string { return o.(*skiffv1.Service).GetSpec().GetClusterIp() },
		},
		Columns: []Column{
			nameColumn,
			{Header: "TYPE", Value: func(o Object, _ time.Time) string { return o.(*skiffv1.Service).GetSpec().GetType() }},
			{Header: "CLUSTER-IP", Value: func(o Object, _ time.Time) string {
				return orNone(o.(*skiffv1.Service).GetSpec().GetClusterIp())
			}},
			{Header: "PORT(S)", Value: func(o Object, _ time.Time) string { return ServicePorts(o.(*skiffv1.Service)) }},
			ageColumn,
			{Header: "SELECTOR", Wide: true, Value: func(o Object, _ time.Time) string {
				return orNone(selectorString(o.(*skiffv1.Service).GetSpec().GetSelector()))
			}},
		},
	}, skiffv1connect.NewServiceServiceClient, skiffv1connect.NewServiceServiceHandler)

	Endpoints = Register[skiffv1.Endpoints, skiffv1.EndpointsList, skiffv1.EndpointsWatchEvent](Kind{
		Version: "v1", Kind: "Endpoints", Plural: "endpoints", Singular: "endpoints", Short: []string{"ep"}, Namespaced: true,
		Columns: []Column{
			nameColumn,
			{Header: "ENDPOINTS", Value: func(o Object, _ time.Time) string { return EndpointsString(o.(*skiffv1.Endpoints)) }},
			ageColumn,
		},
	}, skiffv1connect.NewEndpointsServiceClient, skiffv1connect.NewEndpointsServiceHandler)

	Deployment = Register[skiffv1.Deployment, skiffv1.DeploymentList, skiffv1.DeploymentWatchEvent](Kind{
		Group: "apps", Version: "v1", Kind: "Deployment", Plural: "deployments", Singular: "deployment", Short: []string{"deploy"}, Namespaced: true,
		Columns: []Column{
			nameColumn,
			{Header: "READY", Value: func(o Object, _ time.Time) string {
				d := o.(*skiffv1.Deployment)
				return fmt.Sprintf("%d/%d", d.GetStatus().GetReadyReplicas(), Replicas(d.GetSpec().Replicas))
			}},
			{Header: "UP-TO-DATE", Value: func(o Object, _ time.Time) string {
				return strconv.Itoa(int(o.(*skiffv1.Deployment).GetStatus().GetUpdatedReplicas()))
			}},
			{Header: "AVAILABLE", Value: func(o Object, _ time.Time) string {
				return strconv.Itoa(int(o.(*skiffv1.Deployment).GetStatus().GetAvailableReplicas()))
			}},
			ageColumn,
			{Header: "CONTAINERS", Wide: true, Value: func(o Object, _ time.Time) string {
				return containerNames(o.(*skiffv1.Deployment).GetSpec().GetTemplate())
			}},
			{Header: "IMAGES", Wide: true, Value: func(o Object, _ time.Time) string {
				return containerImages(o.(*skiffv1.Deployment).GetSpec().GetTemplate())
			}},
			{Header: "SELECTOR", Wide: true, Value: func(o Object, _ time.Time) string {
				return orNone(LabelSelectorString(o.(*skiffv1.Deployment).GetSpec().GetSelector()))
			}},
		},
	}, skiffv1connect.NewDeploymentServiceClient, skiffv1connect.NewDeploymentServiceHandler)

	ReplicaSet = Register[skiffv1.ReplicaSet, skiffv1.ReplicaSetList, skiffv1.ReplicaSetWatchEvent](Kind{
		Group: "apps", Version: "v1", Kind: "ReplicaSet", Plural: "replicasets", Singular: "replicaset", Short: []string{"rs"}, Namespaced: true,
		Columns: []Column{
			nameColumn,
			{Header: "DESIRED", Value: func(o Object, _ time.Time) string {
				return strconv.Itoa(int(Replicas(o.(*skiffv1.ReplicaSet).GetSpec().Replicas)))
			}},
			{Header: "CURRENT", Value: func(o Object, _ time.Time) string {
				return strconv.Itoa(int(o.(*skiffv1.ReplicaSet).GetStatus().GetReplicas()))
			}},
			{Header: "READY", Value: func(o Object, _ time.Time) string {
				return strconv.Itoa(int(o.(*skiffv1.ReplicaSet).GetStatus().GetReadyReplicas()))
			}},
			ageColumn,
			{Header: "CONTAINERS", Wide: true, Value: func(o Object, _ time.Time) string {
				return containerNames(o.(*skiffv1.ReplicaSet).GetSpec().GetTemplate())
			}},
			{Header: "IMAGES", Wide: true, Value: func(o Object, _ time.Time) string {
				return containerImages(o.(*skiffv1.ReplicaSet).GetSpec().GetTemplate())
			}},
			{Header: "SELECTOR", Wide: true, Value: func(o Object, _ time.Time) string {
				return orNone(LabelSelectorString(o.(*skiffv1.ReplicaSet).GetSpec().GetSelector()))
			}},
		},
	}, skiffv1connect.NewReplicaSetServiceClient, skiffv1connect.NewReplicaSetServiceHandler)

	Event = Register[skiffv1.Event, skiffv1.EventList, skiffv1.EventWatchEvent](Kind{
		Version: "v1", Kind: "Event", Plural: "events", Singular: "event", Short: []string{"ev"}, Namespaced: true,
		Fields: map[string]func(Object) string{
			"involvedObject.kind": func(o Object) string { return o.(*skiffv1.Event).GetInvolvedObject().GetKind() },
			"involvedObject.name": func(o Object) string { return o.(*skiffv1.Event).GetInvolvedObject().GetName() },
			"involvedObject.uid":  func(o Object) string { return o.(*skiffv1.Event).GetInvolvedObject().GetUid() },
			"reason":              func(o Object) string { return o.(*skiffv1.Event).GetReason() },
			"type":                func(o Object) string { return o.(*skiffv1.Event).GetType() },
		},
		Columns: []Column{
			{Header: "LAST SEEN", Value: func(o Object, now time.Time) string {
				e := o.(*skiffv1.Event)
				if e.GetLastTimestamp() == nil {
					return "<unknown>"
				}
				return Age(e.GetLastTimestamp().AsTime(), now)
			}},
			{Header: "TYPE", Value: func(o Object, _ time.Time) string { return o.(*skiffv1.Event).GetType() }},
			{Header: "REASON", Value: func(o Object, _ time.Time) string { return o.(*skiffv1.Event).GetReason() }},
			{Header: "OBJECT", Value: func(o Object, _ time.Time) string {
				io := o.(*skiffv1.Event).GetInvolvedObject()
				return strings.ToLower(io.GetKind()) + "/" + io.GetName()
			}},
			{Header: "COUNT", Wide: true, Value: func(o Object, _ time.Time) string {
				return strconv.Itoa(int(o.(*skiffv1.Event).GetCount()))
			}},
			{Header: "SOURCE", Wide: true, Value: func(o Object, _ time.Time) string {
				s := o.(*skiffv1.Event).GetSource()
				if s.GetHost() != "" {
					return s.GetComponent() + ", " + s.GetHost()
				}
				return s.GetComponent()
			}},
			{Header: "MESSAGE", Value: func(o Object, _ time.Time) string { return o.(*skiffv1.Event).GetMessage() }},
		},
		Order: func(a, b Object) int {
			return a.(*skiffv1.Event).GetLastTimestamp().AsTime().Compare(b.(*skiffv1.Event).GetLastTimestamp().AsTime())
		},
	}, skiffv1connect.NewEventServiceClient, skiffv1connect.NewEventServiceHandler)
)

var (
	nameColumn = Column{Header: "NAME", Value: func(o Object, _ time.Time) string { return o.GetMetadata().GetName() }}
	ageColumn  = Column{Header: "AGE", Value: func(o Object, now time.Time) string {
		ts := o.GetMetadata().GetCreationTimestamp()
		if ts == nil {
			return "<unknown>"
		}
		return Age(ts.AsTime(), now)
	}}
)

// Age prints how long ago t was as kubectl does: 45s, 3m, 5h, 2d.
func Age(t, now time.Time) string {
	d := now.Sub(t)
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// PodStatus is the STATUS kubectl shows for a pod: Terminating once it is
// being deleted, a container's waiting reason while the pod waits on it
// (ErrImagePull, CrashLoopBackOff), else the pod's phase.
func PodStatus(p *skiffv1.Pod) string {
	if p.GetMetadata().GetDeletionTimestamp() != nil {
		return "Terminating"
	}
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

// NodeStatus is the STATUS kubectl shows for a node: Ready or NotReady, and
// SchedulingDisabled when it is cordoned.
func NodeStatus(n *skiffv1.Node) string {
	status := "NotReady"
	for _, c := range n.GetStatus().GetConditions() {
		if c.GetType() == "Ready" && c.GetStatus() == "True" {
			status = "Ready"
		}
	}
	if n.GetSpec().GetUnschedulable() {
		status += ",SchedulingDisabled"
	}
	return status
}

// ServicePorts is the PORT(S) column kubectl shows for a service:
// "80/TCP", "80:30080/TCP" for a node port, comma-separated.
func ServicePorts(s *skiffv1.Service) string {
	var parts []string
	for _, p := range s.GetSpec().GetPorts() {
		proto := p.GetProtocol()
		if proto == "" {
			proto = "TCP"
		}
		if p.GetNodePort() != 0 {
			parts = append(parts, fmt.Sprintf("%d:%d/%s", p.GetPort(), p.GetNodePort(), proto))
			continue
		}
		parts = append(parts, fmt.Sprintf("%d/%s", p.GetPort(), proto))
	}
	return orNone(strings.Join(parts, ","))
}

// EndpointsString is the ENDPOINTS column kubectl shows: ip:port of the
// ready addresses, at most three, then "+ N more...".
func EndpointsString(e *skiffv1.Endpoints) string {
	var all []string
	for _, ss := range e.GetSubsets() {
		for _, a := range ss.GetAddresses() {
			for _, p := range ss.GetPorts() {
				all = append(all, fmt.Sprintf("%s:%d", a.GetIp(), p.GetPort()))
			}
		}
	}
	if len(all) > 3 {
		return strings.Join(all[:3], ",") + fmt.Sprintf(" + %d more...", len(all)-3)
	}
	return orNone(strings.Join(all, ","))
}

func selectorString(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}
