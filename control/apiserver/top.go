package apiserver

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

// Bounds of Top.
const (
	// topCallTimeout bounds each node's PodStats call. It is shorter than
	// agentCallTimeout: a node that does not answer is reported, and the
	// others' figures should not wait half a minute for it (metrics-server
	// gives the kubelet 10 s). An agent's first call takes about a second.
	topCallTimeout = 10 * time.Second
	// maxTopCalls bounds the nodes asked at once.
	maxTopCalls = 32
)

// Top reads the CPU and memory use of running pods from the agents of
// their nodes, as `kubectl top pods` reads metrics-server: it lists the
// pods that match (namespace, label selector, name), asks each of their
// nodes at once, and merges the answers in namespace and name order. A pod
// that is not scheduled, has finished, or has no running container yet is
// absent; a node whose agent does not answer is reported with the reason,
// and its pods are absent. Authorized as a list of pods in the namespace
// (of every namespace with allNamespaces).
func (s *podService) Top(ctx context.Context, req *connect.Request[skiffv1.TopPodsRequest]) (*connect.Response[skiffv1.TopPodsResponse], error) {
	r := req.Msg
	ns := topNamespace(r)
	var pods []kinds.Object
	if r.GetName() != "" {
		if r.GetAllNamespaces() {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("name: a pod is named within one namespace, not with allNamespaces"))
		}
		o, err := s.b.get(ctx, kinds.Pod, ns, r.GetName())
		if err != nil {
			return nil, err
		}
		f, err := parseFilter(kinds.Pod, r.GetLabelSelector(), "")
		if err != nil {
			return nil, err
		}
		if keep := f.keep(kinds.Pod); keep == nil || keep(o) {
			pods = append(pods, o)
		}
	} else {
		var err error
		if pods, _, err = s.b.List(ctx, kinds.Pod, &skiffv1.ListRequest{Namespace: ns, LabelSelector: r.GetLabelSelector()}); err != nil {
			return nil, err
		}
	}
	byNode := map[string][]*skiffv1.Pod{}
	for _, o := range pods {
		p := o.(*skiffv1.Pod)
		if node := p.GetSpec().GetNodeName(); node != "" && !podFinished(p) {
			byNode[node] = append(byNode[node], p)
		}
	}
	res := &skiffv1.TopPodsResponse{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	seats := make(chan struct{}, maxTopCalls)
	for node, nodePods := range byNode {
		wg.Add(1)
		seats <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-seats }()
			got, err := s.nodeStats(ctx, node, nodePods)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.UnreachableNodes = append(res.UnreachableNodes, &skiffv1.UnreachableNode{Node: node, Reason: err.Error()})
				return
			}
			res.Pods = append(res.Pods, got...)
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, connect.NewError(connect.CodeOf(err), err)
	}
	slices.SortFunc(res.Pods, func(a, b *skiffv1.PodMetrics) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	slices.SortFunc(res.UnreachableNodes, func(a, b *skiffv1.UnreachableNode) int { return cmp.Compare(a.Node, b.Node) })
	return connect.NewResponse(res), nil
}

// topNamespace is the namespace a Top call reads: "" for every one.
func topNamespace(r *skiffv1.TopPodsRequest) string {
	if r.GetAllNamespaces() {
		return ""
	}
	return namespaceOf(kinds.Pod, r.GetNamespace())
}

func podFinished(p *skiffv1.Pod) bool {
	ph := p.GetStatus().GetPhase()
	return ph == "Succeeded" || ph == "Failed"
}

// nodeStats asks the agent of node for the stats of pods, and keeps those
// of the very pods asked (by uid: not an older pod of the same name).
func (s *podService) nodeStats(ctx context.Context, node string, pods []*skiffv1.Pod) ([]*skiffv1.PodMetrics, error) {
	no, err := s.b.get(ctx, kinds.Node, "", node)
	if err != nil {
		return nil, fmt.Errorf("read node: %s", connectMessage(err))
	}
	endpoint := no.(*skiffv1.Node).GetStatus().GetAgentEndpoint()
	if endpoint == "" {
		return nil, fmt.Errorf("the node has not reported an agent endpoint")
	}
	// One namespace per call, as the agent filters: with pods of many,
	// ask for every namespace and keep what was asked.
	req := &skiffv1.PodStatsRequest{Namespace: pods[0].GetMetadata().GetNamespace()}
	uids := make(map[string]bool, len(pods))
	for _, p := range pods {
		uids[p.GetMetadata().GetUid()] = true
		if p.GetMetadata().GetNamespace() != req.Namespace {
			req.Namespace = ""
		}
	}
	if len(pods) <= 100 {
		for _, p := range pods {
			req.Names = append(req.Names, p.GetMetadata().GetName())
		}
	}
	ctx, cancel := context.WithTimeout(ctx, topCallTimeout)
	defer cancel()
	res, err := s.agents(node, endpoint).PodStats(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, fmt.Errorf("read pod stats from the agent at %s: %s", endpoint, connectMessage(err))
	}
	var out []*skiffv1.PodMetrics
	for _, m := range res.Msg.GetPods() {
		if uids[m.GetUid()] {
			out = append(out, m)
		}
	}
	return out, nil
}
