package controllers

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// ManagedByLabel marks the Endpoints the endpoints controller writes, with
// the value ManagedBy: those it deletes when their service goes. Endpoints
// written by hand (for a service without a selector) are never touched.
const (
	ManagedByLabel = "skiff.dev/managed-by"
	ManagedBy      = "endpoints-controller"
)

// hasSelector says whether the endpoints controller keeps s's Endpoints:
// a service without a selector has hand-written ones.
func hasSelector(s *skiffv1.Service) bool { return len(s.GetSpec().GetSelector()) > 0 }

// selects says whether a pod with labels is one of s's.
func selects(s *skiffv1.Service, labels map[string]string) bool {
	if !hasSelector(s) {
		return false
	}
	for k, v := range s.GetSpec().GetSelector() {
		if w, ok := labels[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// BuildEndpoints returns the Endpoints of service s over the pods of its
// namespace, as the Kubernetes endpoints controller builds them: every pod
// the selector picks that has an IP, is not terminating and has not
// finished; a pod whose Ready condition is True in addresses, else in
// notReadyAddresses; each service port resolved per pod (a named target
// port through the pod's container ports, a pod without that port left out
// of that port), and pods grouped into one subset per set of resolved
// ports. The result is sorted, so that two builds of the same state are
// equal.
func BuildEndpoints(s *skiffv1.Service, pods []*skiffv1.Pod) *skiffv1.Endpoints {
	m := s.GetMetadata()
	ep := &skiffv1.Endpoints{Metadata: &skiffv1.ObjectMeta{Namespace: m.GetNamespace(), Name: m.GetName(), Labels: map[string]string{}}}
	for k, v := range m.GetLabels() {
		ep.Metadata.Labels[k] = v
	}
	ep.Metadata.Labels[ManagedByLabel] = ManagedBy
	groups := map[string]*skiffv1.EndpointSubset{}
	for _, p := range pods {
		if !inEndpoints(s, p) {
			continue
		}
		ports := resolvePorts(s, p)
		if len(ports) == 0 {
			continue
		}
		key := portsKey(ports)
		ss := groups[key]
		if ss == nil {
			ss = &skiffv1.EndpointSubset{Ports: ports}
			groups[key] = ss
		}
		addr := &skiffv1.EndpointAddress{
			Ip:        p.GetStatus().GetPodIp(),
			NodeName:  p.GetSpec().GetNodeName(),
			TargetRef: &skiffv1.ObjectReference{Kind: "Pod", Namespace: p.GetMetadata().GetNamespace(), Name: p.GetMetadata().GetName(), Uid: p.GetMetadata().GetUid()},
		}
		if podReady(p) {
			ss.Addresses = append(ss.Addresses, addr)
		} else {
			ss.NotReadyAddresses = append(ss.NotReadyAddresses, addr)
		}
	}
	for _, ss := range groups {
		ep.Subsets = append(ep.Subsets, ss)
	}
	normalize(ep)
	return ep
}

// inEndpoints says whether pod p belongs in s's endpoints at all.
func inEndpoints(s *skiffv1.Service, p *skiffv1.Pod) bool {
	if p.GetMetadata().GetNamespace() != s.GetMetadata().GetNamespace() || !selects(s, p.GetMetadata().GetLabels()) {
		return false
	}
	if p.GetStatus().GetPodIp() == "" || p.GetMetadata().GetDeletionTimestamp() != nil {
		return false
	}
	switch p.GetStatus().GetPhase() {
	case "Succeeded", "Failed":
		return false
	}
	return true
}

func podReady(p *skiffv1.Pod) bool {
	for _, c := range p.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c.GetStatus() == "True"
		}
	}
	return false
}

// resolvePorts is the endpoint ports of s on pod p, one per service port
// that p has.
func resolvePorts(s *skiffv1.Service, p *skiffv1.Pod) []*skiffv1.EndpointPort {
	var out []*skiffv1.EndpointPort
	for _, sp := range s.GetSpec().GetPorts() {
		proto := cmp.Or(sp.GetProtocol(), "TCP")
		port, ok := targetPort(sp.GetTargetPort(), proto, sp.GetPort(), p)
		if ok {
			out = append(out, &skiffv1.EndpointPort{Name: sp.GetName(), Port: port, Protocol: proto})
		}
	}
	return out
}

// targetPort resolves a service port's target on pod p: a number is
// itself; a name is the container port of that name and protocol.
func targetPort(tp, protocol string, port int32, p *skiffv1.Pod) (int32, bool) {
	if tp == "" {
		return port, true
	}
	if n, err := strconv.Atoi(tp); err == nil {
		return int32(n), n > 0
	}
	for _, c := range p.GetSpec().GetContainers() {
		for _, cp := range c.GetPorts() {
			if cp.GetName() == tp && cmp.Or(cp.GetProtocol(), "TCP") == protocol {
				return cp.GetContainerPort(), true
			}
		}
	}
	return 0, false
}

func portsKey(ports []*skiffv1.EndpointPort) string {
	var b strings.Builder
	for _, p := range sortedPorts(ports) {
		b.WriteString(p.GetName() + "/" + p.GetProtocol() + "/" + strconv.Itoa(int(p.GetPort())) + ",")
	}
	return b.String()
}

func sortedPorts(ports []*skiffv1.EndpointPort) []*skiffv1.EndpointPort {
	out := slices.Clone(ports)
	slices.SortFunc(out, func(a, b *skiffv1.EndpointPort) int {
		return cmp.Or(cmp.Compare(a.GetName(), b.GetName()), cmp.Compare(a.GetPort(), b.GetPort()), cmp.Compare(a.GetProtocol(), b.GetProtocol()))
	})
	return out
}

func sortAddresses(as []*skiffv1.EndpointAddress) {
	slices.SortFunc(as, func(a, b *skiffv1.EndpointAddress) int {
		return cmp.Or(compareIPs(a.GetIp(), b.GetIp()), cmp.Compare(a.GetTargetRef().GetName(), b.GetTargetRef().GetName()))
	})
}

// compareIPs orders addresses as numbers (10.244.0.3 before 10.244.0.12).
func compareIPs(a, b string) int {
	x, errx := netip.ParseAddr(a)
	y, erry := netip.ParseAddr(b)
	if errx != nil || erry != nil {
		return cmp.Compare(a, b)
	}
	return x.Compare(y)
}

// normalize sorts ep's subsets, their addresses and ports in place, so that
// the same endpoints in any order compare equal.
func normalize(ep *skiffv1.Endpoints) {
	for _, ss := range ep.Subsets {
		ss.Ports = sortedPorts(ss.Ports)
		sortAddresses(ss.Addresses)
		sortAddresses(ss.NotReadyAddresses)
	}
	slices.SortFunc(ep.Subsets, func(a, b *skiffv1.EndpointSubset) int { return cmp.Compare(portsKey(a.Ports), portsKey(b.Ports)) })
}

// sameEndpoints says whether the stored endpoints have the content want
// has (subsets and labels), ignoring order.
func sameEndpoints(stored, want *skiffv1.Endpoints) bool {
	a := &skiffv1.Endpoints{Subsets: proto.Clone(stored).(*skiffv1.Endpoints).Subsets}
	normalize(a)
	if len(a.Subsets) != len(want.Subsets) {
		return false
	}
	for i := range a.Subsets {
		if !proto.Equal(a.Subsets[i], want.Subsets[i]) {
			return false
		}
	}
	sl, wl := stored.GetMetadata().GetLabels(), want.GetMetadata().GetLabels()
	if len(sl) != len(wl) {
		return false
	}
	for k, v := range wl {
		if sl[k] != v {
			return false
		}
	}
	return true
}
