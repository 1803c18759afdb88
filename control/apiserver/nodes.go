package apiserver

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
	"skiff.dev/skiff/control/api/quantity"
)

// podCIDRClaims is where nodes' pod CIDRs are claimed, one key each.
const podCIDRClaims = claimPrefix + "podcidrs/"

// nodeStrategy validates nodes and gives each a pod CIDR of the cluster
// CIDR: on create, or on the next write (the agent's heartbeat, an
// UpdateStatus) of a node that has none, such as one registered before pod
// CIDRs were allocated or while the cluster CIDR was full. A node that
// cannot get one is written without it (and a warning logged), so that a
// full cluster CIDR does not stop a node registering.
//
// The server stamps each NoExecute taint that has no time_added with the
// time of the write, so that tolerationSeconds count from when the taint
// appeared.
func nodeStrategy(net Network, log *slog.Logger, now func() time.Time) *strategy {
	return &strategy{
		validate: func(o kinds.Object) fieldErrors { return validateNode(o.(*skiffv1.Node)) },
		defaults: func(o kinds.Object) { stampTaints(o.(*skiffv1.Node), now()) },
		checkUpdate: func(old, o kinds.Object) fieldErrors {
			fe := fieldErrors{}
			was, now := old.(*skiffv1.Node).GetSpec().GetPodCidr(), o.(*skiffv1.Node).GetSpec().GetPodCidr()
			if was != "" && now != "" && was != now {
				fe.add("spec.podCIDR", "field is immutable once set (is %q)", was)
			}
			return fe
		},
		claimer: &claimer{
			fill: func(ctx context.Context, old, o kinds.Object, dryRun bool, used usedFunc) ([]string, error) {
				return fillNode(ctx, net, log, old, o.(*skiffv1.Node), dryRun, used)
			},
			keys: func(o kinds.Object) []claim {
				c := o.(*skiffv1.Node).GetSpec().GetPodCidr()
				p, err := netip.ParsePrefix(c)
				if c == "" || err != nil {
					return nil
				}
				return []claim{{key: podCIDRClaims + cidrName(p), field: "spec.podCIDR", value: c}}
			},
		},
	}
}

// fillNode keeps the pod CIDR old had, checks one the client gives, and
// picks one for a node without.
func fillNode(ctx context.Context, net Network, log *slog.Logger, old kinds.Object, n *skiffv1.Node, dryRun bool, used usedFunc) ([]string, error) {
	if n.Spec == nil {
		n.Spec = &skiffv1.NodeSpec{}
	}
	var was string
	if old != nil {
		was = old.(*skiffv1.Node).GetSpec().GetPodCidr()
	}
	if n.Spec.PodCidr == "" {
		n.Spec.PodCidr = was
	}
	if c := n.Spec.PodCidr; c != "" {
		if c == was {
			return nil, nil
		}
		p, err := netip.ParsePrefix(c)
		if err != nil || !net.nodeCIDRAllowed(p) {
			return nil, fieldErrors{fmt.Sprintf("spec.podCIDR: invalid value %q: must be a /%d of the cluster CIDR %s", c, net.NodeCIDRMaskSize, net.ClusterCIDR)}.err("node", n.GetMetadata().GetName())
		}
		return nil, nil
	}
	if dryRun {
		return nil, nil
	}
	taken, err := used(ctx, podCIDRClaims)
	if err != nil {
		return nil, err
	}
	p, ok := net.pickNodeCIDR(taken)
	if !ok {
		log.Warn("no free pod CIDR for node: it gets none until one is freed", "node", n.GetMetadata().GetName(), "clusterCIDR", net.ClusterCIDR.String())
		return nil, nil
	}
	n.Spec.PodCidr = p.String()
	return []string{podCIDRClaims + cidrName(p)}, nil
}

// stampTaints sets time_added on the NoExecute taints that have none.
func stampTaints(n *skiffv1.Node, now time.Time) {
	for _, t := range n.GetSpec().GetTaints() {
		if t.GetEffect() == "NoExecute" && t.TimeAdded == nil {
			t.TimeAdded = timestamppb.New(now)
		}
	}
}

// runtimeHandlers are the runtime handlers a node may offer.
var runtimeHandlers = map[string]bool{"wasm": true, "runc": true}

func validateNode(n *skiffv1.Node) fieldErrors {
	fe := fieldErrors{}
	validateTaints(&fe, n.GetSpec().GetTaints())
	if c := n.GetSpec().GetPodCidr(); c != "" {
		if p, err := netip.ParsePrefix(c); err != nil || p.Masked() != p {
			fe.add("spec.podCIDR", "invalid value %q: must be a CIDR such as 10.244.1.0/24", c)
		}
	}
	st := n.GetStatus()
	if st == nil {
		return fe
	}
	for name, q := range st.GetCapacity() {
		path := "status.capacity[" + name + "]"
		switch name {
		case "cpu", "memory", "pods", "ephemeral-storage":
		default:
			fe.add(path, "unsupported resource: supported are cpu, memory, pods, ephemeral-storage")
		}
		if _, err := quantity.Parse(q); err != nil {
			fe.add(path, "invalid value %q: must be a quantity such as 2, 500m, 24Gi", q)
		}
	}
	for i, r := range st.GetRuntimes() {
		if !runtimeHandlers[r] {
			fe.add(fmt.Sprintf("status.runtimes[%d]", i), "unsupported value %q: supported values are \"wasm\", \"runc\"", r)
		}
	}
	validateConditions(&fe, "status.conditions", st.GetConditions())
	for i, a := range st.GetAddresses() {
		path := fmt.Sprintf("status.addresses[%d]", i)
		switch a.GetType() {
		case "InternalIP":
			if a.GetAddress() == "" {
				fe.add(path+".address", "required value")
			}
			validateIP(&fe, path+".address", a.GetAddress())
		case "Hostname":
			validateSubdomain(&fe, path+".address", a.GetAddress())
		default:
			fe.add(path+".type", "unsupported value %q: supported values are \"InternalIP\", \"Hostname\"", a.GetType())
		}
	}
	if ep := st.GetAgentEndpoint(); ep != "" {
		host, port, err := net.SplitHostPort(ep)
		if p, perr := strconv.Atoi(port); err != nil || perr != nil || host == "" || p < 1 || p > 65535 {
			fe.add("status.agentEndpoint", "invalid value %q: must be host:port", ep)
		}
	}
	if len(st.GetAgentVersion()) > 128 {
		fe.add("status.agentVersion", "must be no more than 128 characters")
	}
	return fe
}

type nodeService struct {
	*kinds.GenericService[skiffv1.Node, skiffv1.NodeList, skiffv1.NodeWatchEvent, *skiffv1.Node, *skiffv1.NodeList, *skiffv1.NodeWatchEvent]
	b *backend
}

var _ skiffv1connect.NodeServiceHandler = (*nodeService)(nil)

// UpdateStatus replaces the node's status alone.
func (s *nodeService) UpdateStatus(ctx context.Context, req *connect.Request[skiffv1.Node]) (*connect.Response[skiffv1.Node], error) {
	o, err := s.b.updateStatus(ctx, kinds.Node, req.Msg, kinds.DryRun(req.Header()))
	return respondObj[skiffv1.Node](o, err)
}
