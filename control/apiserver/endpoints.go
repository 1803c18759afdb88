package apiserver

import (
	"fmt"
	"net/netip"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

// endpointsStrategy validates Endpoints: the endpoints controller writes
// them for services with a selector, users for services without one.
func endpointsStrategy() *strategy {
	return &strategy{
		defaults: func(o kinds.Object) {
			for _, ss := range o.(*skiffv1.Endpoints).Subsets {
				for _, p := range ss.Ports {
					if p.Protocol == "" {
						p.Protocol = "TCP"
					}
				}
			}
		},
		validate: func(o kinds.Object) fieldErrors { return validateEndpoints(o.(*skiffv1.Endpoints)) },
	}
}

func validateEndpoints(e *skiffv1.Endpoints) fieldErrors {
	fe := fieldErrors{}
	for i, ss := range e.GetSubsets() {
		path := fmt.Sprintf("subsets[%d]", i)
		if len(ss.Addresses)+len(ss.NotReadyAddresses) == 0 {
			fe.add(path, "required value: a subset needs at least one address or notReadyAddress")
		}
		for j, a := range ss.Addresses {
			validateEndpointAddress(&fe, fmt.Sprintf("%s.addresses[%d]", path, j), a)
		}
		for j, a := range ss.NotReadyAddresses {
			validateEndpointAddress(&fe, fmt.Sprintf("%s.notReadyAddresses[%d]", path, j), a)
		}
		if len(ss.Ports) == 0 {
			fe.add(path+".ports", "required value")
		}
		names := map[string]bool{}
		for j, p := range ss.Ports {
			pp := fmt.Sprintf("%s.ports[%d]", path, j)
			if len(ss.Ports) > 1 || p.Name != "" {
				validateLabel(&fe, pp+".name", p.Name)
				if names[p.Name] {
					fe.add(pp+".name", "duplicate value %q", p.Name)
				}
				names[p.Name] = true
			}
			if p.Port < 1 || p.Port > 65535 {
				fe.add(pp+".port", "invalid value %d: must be between 1 and 65535, inclusive", p.Port)
			}
			if !protocols[p.Protocol] {
				fe.add(pp+".protocol", "unsupported value %q: supported values are \"TCP\", \"UDP\"", p.Protocol)
			}
		}
	}
	return fe
}

// validateEndpointAddress checks an endpoint: a unicast IP that is not
// loopback, link-local or unspecified, as Kubernetes requires (a proxy
// must not be pointed at the node itself).
func validateEndpointAddress(fe *fieldErrors, path string, a *skiffv1.EndpointAddress) {
	ip, err := netip.ParseAddr(a.GetIp())
	switch {
	case a.GetIp() == "":
		fe.add(path+".ip", "required value")
	case err != nil || ip.Zone() != "":
		fe.add(path+".ip", "invalid value %q: must be an IP address", a.GetIp())
	case ip.IsUnspecified(), ip.IsLoopback(), ip.IsLinkLocalUnicast(), ip.IsMulticast(), ip.IsLinkLocalMulticast(), ip.IsInterfaceLocalMulticast():
		fe.add(path+".ip", "invalid value %q: may not be unspecified, loopback, link-local or multicast", a.GetIp())
	}
	if a.GetNodeName() != "" {
		validateSubdomain(fe, path+".nodeName", a.GetNodeName())
	}
}

// validateIP checks an optional field that holds an IP address.
func validateIP(fe *fieldErrors, path, v string) {
	if v == "" {
		return
	}
	if ip, err := netip.ParseAddr(v); err != nil || ip.Zone() != "" {
		fe.add(path, "invalid value %q: must be an IP address", v)
	}
}
