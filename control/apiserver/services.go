package apiserver

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
	"skiff.dev/skiff/control/api/selector"
)

// Claim prefixes of services: one key per cluster IP and per node port.
const (
	clusterIPClaims = claimPrefix + "clusterips/"
	nodePortClaims  = claimPrefix + "nodeports/"
)

// Service types skiff supports.
const (
	ServiceTypeClusterIP = "ClusterIP"
	ServiceTypeNodePort  = "NodePort"
)

var (
	// dns1035Label is a service's name, as Kubernetes requires: it becomes
	// environment variable names, so it starts with a letter.
	dns1035Label = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)
	// ianaSvcName is a named port (IANA_SVC_NAME): at most 15 characters,
	// lower case letters, digits and '-', at least one letter, no '--',
	// not starting or ending with '-'.
	ianaSvcName   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	ianaHasLetter = regexp.MustCompile(`[a-z]`)
	ianaDashes    = regexp.MustCompile(`--`)
)

// serviceStrategy validates services, defaults them, and allocates their
// cluster IP and node ports from net (claims.go).
func serviceStrategy(net Network) *strategy {
	return &strategy{
		nameRule: func(fe *fieldErrors, path, name string) {
			switch {
			case name == "":
				fe.add(path, "required value")
			case len(name) > 63:
				fe.add(path, "must be no more than 63 characters")
			case !dns1035Label.MatchString(name):
				fe.add(path, "invalid value %q: a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with a letter, and end with an alphanumeric character", name)
			}
		},
		defaults: func(o kinds.Object) { defaultService(o.(*skiffv1.Service)) },
		validate: func(o kinds.Object) fieldErrors { return validateService(o.(*skiffv1.Service)) },
		checkUpdate: func(old, o kinds.Object) fieldErrors {
			return checkServiceUpdate(old.(*skiffv1.Service), o.(*skiffv1.Service))
		},
		claimer: &claimer{
			fill: func(ctx context.Context, old, o kinds.Object, dryRun bool, used usedFunc) ([]string, error) {
				var os *skiffv1.Service
				if old != nil {
					os = old.(*skiffv1.Service)
				}
				return fillService(ctx, net, os, o.(*skiffv1.Service), dryRun, used)
			},
			keys: func(o kinds.Object) []claim { return serviceClaims(o.(*skiffv1.Service)) },
		},
	}
}

func defaultService(s *skiffv1.Service) {
	if s.Spec == nil {
		return
	}
	if s.Spec.Type == "" {
		s.Spec.Type = ServiceTypeClusterIP
	}
	if s.Spec.ClusterIp == "" && len(s.Spec.ClusterIps) == 1 {
		s.Spec.ClusterIp = s.Spec.ClusterIps[0]
	}
	for _, p := range s.Spec.Ports {
		if p.Protocol == "" {
			p.Protocol = "TCP"
		}
		if p.TargetPort == "" && p.Port != 0 {
			p.TargetPort = strconv.Itoa(int(p.Port))
		}
	}
}

var protocols = map[string]bool{"TCP": true, "UDP": true}

func validateService(s *skiffv1.Service) fieldErrors {
	fe := fieldErrors{}
	spec := s.GetSpec()
	if spec == nil {
		fe.add("spec", "required value")
		return fe
	}
	switch spec.Type {
	case ServiceTypeClusterIP, ServiceTypeNodePort:
	default:
		fe.add("spec.type", "unsupported value %q: supported values are \"ClusterIP\", \"NodePort\"", spec.Type)
	}
	if len(spec.Ports) == 0 {
		fe.add("spec.ports", "required value: a service needs at least one port")
	}
	names := map[string]bool{}
	type portKey struct {
		port  int32
		proto string
	}
	ports, nodePorts := map[portKey]bool{}, map[portKey]bool{}
	for i, p := range spec.Ports {
		path := fmt.Sprintf("spec.ports[%d]", i)
		if len(spec.Ports) > 1 || p.Name != "" {
			validateLabel(&fe, path+".name", p.Name)
			if names[p.Name] {
				fe.add(path+".name", "duplicate value %q", p.Name)
			}
			names[p.Name] = true
		}
		if !protocols[p.Protocol] {
			fe.add(path+".protocol", "unsupported value %q: supported values are \"TCP\", \"UDP\"", p.Protocol)
		}
		if p.Port < 1 || p.Port > 65535 {
			fe.add(path+".port", "invalid value %d: must be between 1 and 65535, inclusive", p.Port)
		}
		if k := (portKey{p.Port, p.Protocol}); ports[k] {
			fe.add(path, "duplicate value: port %d/%s", p.Port, p.Protocol)
		} else {
			ports[k] = true
		}
		validateTargetPort(&fe, path+".targetPort", p.TargetPort)
		switch {
		case p.NodePort == 0:
		case spec.Type != ServiceTypeNodePort:
			fe.add(path+".nodePort", "forbidden: may be set only when spec.type is \"NodePort\"")
		case p.NodePort < 1 || p.NodePort > 65535:
			fe.add(path+".nodePort", "invalid value %d: must be between 1 and 65535, inclusive", p.NodePort)
		default:
			if k := (portKey{p.NodePort, p.Protocol}); nodePorts[k] {
				fe.add(path+".nodePort", "duplicate value %d/%s", p.NodePort, p.Protocol)
			} else {
				nodePorts[k] = true
			}
		}
	}
	for _, k := range sortedKeys(spec.Selector) {
		for _, msg := range selector.ValidateQualifiedName(k) {
			fe.add("spec.selector", "invalid key %q: %s", shorten(k), msg)
		}
		for _, msg := range selector.ValidateLabelValue(spec.Selector[k]) {
			fe.add("spec.selector["+shorten(k)+"]", "invalid value %q: %s", shorten(spec.Selector[k]), msg)
		}
	}
	switch ip := spec.ClusterIp; {
	case ip == "":
	case ip == "None":
		fe.add("spec.clusterIP", "unsupported value \"None\": headless services are not supported (skiff has no cluster DNS to resolve them)")
	default:
		if a, err := netip.ParseAddr(ip); err != nil || a.Zone() != "" {
			fe.add("spec.clusterIP", "invalid value %q: must be an IP address", ip)
		}
	}
	switch {
	case len(spec.ClusterIps) > 1:
		fe.add("spec.clusterIPs", "too many: %d: dual-stack services are not supported; give at most one", len(spec.ClusterIps))
	case len(spec.ClusterIps) == 1 && spec.ClusterIps[0] != spec.ClusterIp:
		fe.add("spec.clusterIPs[0]", "invalid value %q: must be spec.clusterIP (%q)", spec.ClusterIps[0], spec.ClusterIp)
	}
	return fe
}

// validateTargetPort checks a target port: a number 1-65535, or the name
// of a container port (IANA_SVC_NAME).
func validateTargetPort(fe *fieldErrors, path, tp string) {
	if tp == "" {
		fe.add(path, "required value")
		return
	}
	if tp[0] >= '0' && tp[0] <= '9' {
		if n, err := strconv.Atoi(tp); err != nil || n < 1 || n > 65535 {
			fe.add(path, "invalid value %q: must be between 1 and 65535, inclusive, or a port name", tp)
		}
		return
	}
	validatePortName(fe, path, tp)
}

// validatePortName checks a named port (IANA_SVC_NAME), as Kubernetes does
// for container ports and target ports.
func validatePortName(fe *fieldErrors, path, name string) {
	switch {
	case len(name) > 15:
		fe.add(path, "invalid value %q: a port name must be no more than 15 characters", name)
	case !ianaSvcName.MatchString(name) || ianaDashes.MatchString(name):
		fe.add(path, "invalid value %q: a port name must contain only lower case letters, digits and '-', must not start or end with '-' nor hold '--'", name)
	case !ianaHasLetter.MatchString(name):
		fe.add(path, "invalid value %q: a port name must contain at least one letter", name)
	}
}

// checkServiceUpdate keeps what cannot change: the cluster IP and, for a
// service that stays NodePort, its node ports (changing a port's nodePort
// is refused; one left 0 keeps its old value, fillService).
func checkServiceUpdate(old, s *skiffv1.Service) fieldErrors {
	fe := fieldErrors{}
	if o, n := old.GetSpec().GetClusterIp(), s.GetSpec().GetClusterIp(); o != "" && n != "" && o != n {
		fe.add("spec.clusterIP", "field is immutable (is %q)", o)
	}
	if old.GetSpec().GetType() == ServiceTypeNodePort && s.GetSpec().GetType() == ServiceTypeNodePort {
		for i, p := range s.GetSpec().GetPorts() {
			if op := matchingPort(old.GetSpec().GetPorts(), p); op != nil && op.NodePort != 0 && p.NodePort != 0 && p.NodePort != op.NodePort {
				fe.add(fmt.Sprintf("spec.ports[%d].nodePort", i), "field is immutable (is %d); delete and create the service to change it", op.NodePort)
			}
		}
	}
	return fe
}

// matchingPort is the port of ports that p updates: the one of the same
// name, else of the same port and protocol.
func matchingPort(ports []*skiffv1.ServicePort, p *skiffv1.ServicePort) *skiffv1.ServicePort {
	for _, o := range ports {
		if o.Name == p.Name && (p.Name != "" || o.Port == p.Port && o.Protocol == p.Protocol) {
			return o
		}
	}
	return nil
}

// fillService keeps what old held (an update that leaves clusterIP or a
// nodePort empty keeps the allocated one) and allocates the rest: the
// cluster IP, and for NodePort every node port not given. A value the user
// gives must be in range.
func fillService(ctx context.Context, net Network, old, s *skiffv1.Service, dryRun bool, used usedFunc) ([]string, error) {
	spec := s.Spec
	name := s.GetMetadata().GetName()
	var picked []string
	if old != nil && spec.ClusterIp == "" {
		spec.ClusterIp = old.GetSpec().GetClusterIp()
	}
	fe := fieldErrors{}
	if spec.ClusterIp == "" {
		if !dryRun {
			taken, err := used(ctx, clusterIPClaims)
			if err != nil {
				return nil, err
			}
			a, ok := net.pickServiceIP(taken)
			if !ok {
				return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("create service %q: no free cluster IP in %s", name, net.ServiceCIDR))
			}
			spec.ClusterIp = a.String()
			picked = append(picked, clusterIPClaims+spec.ClusterIp)
		}
	} else if old.GetSpec().GetClusterIp() != spec.ClusterIp {
		a, err := netip.ParseAddr(spec.ClusterIp)
		if err == nil {
			spec.ClusterIp = a.String() // one spelling, one claim key
		}
		if err == nil && !net.serviceIPAllowed(a) {
			fe.add("spec.clusterIP", "invalid value %q: not an allocatable address of the service CIDR %s (its network, first and broadcast addresses are reserved)", spec.ClusterIp, net.ServiceCIDR)
		}
	}
	if spec.ClusterIp != "" {
		spec.ClusterIps = []string{spec.ClusterIp}
	}
	if spec.Type == ServiceTypeNodePort {
		var taken map[string]bool
		for i, p := range spec.Ports {
			if p.NodePort == 0 && old.GetSpec().GetType() == ServiceTypeNodePort {
				if op := matchingPort(old.GetSpec().GetPorts(), p); op != nil {
					p.NodePort = op.NodePort
				}
			}
			if p.NodePort != 0 {
				if !net.NodePorts.contains(p.NodePort) && !holdsNodePort(old, p.NodePort) {
					fe.add(fmt.Sprintf("spec.ports[%d].nodePort", i), "invalid value %d: provided port is not in the valid range; the range of valid ports is %s", p.NodePort, net.NodePorts)
				}
				continue
			}
			if dryRun {
				continue
			}
			if taken == nil {
				var err error
				if taken, err = used(ctx, nodePortClaims); err != nil {
					return nil, err
				}
				for _, q := range spec.Ports {
					if q.NodePort != 0 {
						taken[strconv.Itoa(int(q.NodePort))] = true // the service's own, given
					}
				}
			}
			np, ok := net.pickNodePort(taken)
			if !ok {
				return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("service %q: no free node port in %s", name, net.NodePorts))
			}
			p.NodePort = np
			taken[strconv.Itoa(int(np))] = true
			picked = append(picked, nodePortClaims+strconv.Itoa(int(np)))
		}
	}
	return picked, fe.err("service", name)
}

// holdsNodePort says whether old already has node port p.
func holdsNodePort(old *skiffv1.Service, p int32) bool {
	if old.GetSpec().GetType() != ServiceTypeNodePort {
		return false
	}
	for _, op := range old.GetSpec().GetPorts() {
		if op.NodePort == p {
			return true
		}
	}
	return false
}

// serviceClaims are the cluster IP and node ports s holds.
func serviceClaims(s *skiffv1.Service) []claim {
	var out []claim
	if ip := s.GetSpec().GetClusterIp(); ip != "" && ip != "None" {
		out = append(out, claim{key: clusterIPClaims + ip, field: "spec.clusterIP", value: ip})
	}
	if s.GetSpec().GetType() == ServiceTypeNodePort {
		for i, p := range s.GetSpec().GetPorts() {
			if p.NodePort != 0 {
				out = append(out, claim{key: nodePortClaims + strconv.Itoa(int(p.NodePort)), field: fmt.Sprintf("spec.ports[%d].nodePort", i), value: strconv.Itoa(int(p.NodePort))})
			}
		}
	}
	return out
}
