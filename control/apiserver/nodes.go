package apiserver

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
	"skiff.dev/skiff/control/api/quantity"
)

func nodeStrategy() *strategy {
	return &strategy{
		validate: func(o kinds.Object) fieldErrors { return validateNode(o.(*skiffv1.Node)) },
	}
}

// runtimeHandlers are the runtime handlers a node may offer.
var runtimeHandlers = map[string]bool{"wasm": true, "runc": true}

func validateNode(n *skiffv1.Node) fieldErrors {
	fe := fieldErrors{}
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
