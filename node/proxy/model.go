package proxy

import (
	"fmt"
	"net/netip"
)

// Protocol is a service port's transport protocol.
type Protocol string

// The protocols a service port may have.
const (
	TCP Protocol = "TCP"
	UDP Protocol = "UDP"
)

// Service is the proxy's view of one service: its cluster IP and its ports,
// each with the endpoints that serve it. It is the node-side model that the
// API's Service and Endpoints objects are converted to.
type Service struct {
	Namespace string
	Name      string
	ClusterIP string // an IPv4 address
	Ports     []ServicePort
}

// ServicePort is one port of a service. Endpoints are listed per port,
// because a targetPort given by name may resolve to a different port number
// on each endpoint.
type ServicePort struct {
	Name      string // may be empty when the service has only one port
	Protocol  Protocol
	Port      int32 // the port on the cluster IP
	NodePort  int32 // the port on every local address of the node; 0: none
	Endpoints []Endpoint
}

// Endpoint is one backend of a service port.
type Endpoint struct {
	IP   string // an IPv4 address
	Port int32
}

// key identifies a service among the proxier's.
type key struct{ namespace, name string }

func (s *Service) key() key { return key{s.Namespace, s.Name} }

// validate checks everything the rules are made of, so that bad input is
// refused with the field and the reason before anything reaches the kernel.
func (s *Service) validate() error {
	fail := func(field, format string, args ...any) error {
		return fmt.Errorf("service %s/%s: %s: %s", s.Namespace, s.Name, field, fmt.Sprintf(format, args...))
	}
	if s.Namespace == "" || !validName(s.Namespace) {
		return fail("namespace", "%q must be a non-empty name of letters, digits, '-', '.' and '_'", s.Namespace)
	}
	if s.Name == "" || !validName(s.Name) {
		return fail("name", "%q must be a non-empty name of letters, digits, '-', '.' and '_'", s.Name)
	}
	if ip, err := netip.ParseAddr(s.ClusterIP); err != nil || !ip.Is4() || ip.IsUnspecified() {
		return fail("clusterIP", "%q is not an IPv4 address", s.ClusterIP)
	}
	names := map[string]bool{}
	type portKey struct {
		proto Protocol
		port  int32
	}
	ports := map[portKey]bool{}
	nodePorts := map[portKey]bool{}
	for i, p := range s.Ports {
		f := fmt.Sprintf("ports[%d]", i)
		if len(s.Ports) > 1 && p.Name == "" {
			return fail(f+".name", "must be set when a service has more than one port")
		}
		if !validName(p.Name) {
			return fail(f+".name", "%q may hold only letters, digits, '-', '.' and '_'", p.Name)
		}
		if names[p.Name] {
			return fail(f+".name", "%q is used by another port", p.Name)
		}
		names[p.Name] = true
		if p.Protocol != TCP && p.Protocol != UDP {
			return fail(f+".protocol", "%q must be TCP or UDP", p.Protocol)
		}
		if p.Port < 1 || p.Port > 65535 {
			return fail(f+".port", "%d is not a port number", p.Port)
		}
		if ports[portKey{p.Protocol, p.Port}] {
			return fail(f+".port", "%s %d is used by another port", p.Protocol, p.Port)
		}
		ports[portKey{p.Protocol, p.Port}] = true
		if p.NodePort < 0 || p.NodePort > 65535 {
			return fail(f+".nodePort", "%d is not a port number", p.NodePort)
		}
		if p.NodePort != 0 {
			if nodePorts[portKey{p.Protocol, p.NodePort}] {
				return fail(f+".nodePort", "%s %d is used by another port", p.Protocol, p.NodePort)
			}
			nodePorts[portKey{p.Protocol, p.NodePort}] = true
		}
		seen := map[Endpoint]bool{}
		for j, e := range p.Endpoints {
			ef := fmt.Sprintf("%s.endpoints[%d]", f, j)
			if ip, err := netip.ParseAddr(e.IP); err != nil || !ip.Is4() || ip.IsUnspecified() {
				return fail(ef+".ip", "%q is not an IPv4 address", e.IP)
			}
			if e.Port < 1 || e.Port > 65535 {
				return fail(ef+".port", "%d is not a port number", e.Port)
			}
			if seen[e] {
				return fail(ef, "%s:%d is listed twice", e.IP, e.Port)
			}
			seen[e] = true
		}
	}
	return nil
}

// validName: names end up in iptables comments, so they are kept to
// characters that need no escaping.
func validName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_') {
			return false
		}
	}
	return len(s) <= 63
}

// clone returns a deep copy, so that the proxier's state is its own.
func (s *Service) clone() Service {
	c := *s
	c.Ports = make([]ServicePort, len(s.Ports))
	for i, p := range s.Ports {
		p.Endpoints = append([]Endpoint(nil), p.Endpoints...)
		c.Ports[i] = p
	}
	return c
}

// equal reports whether two services would give the same rules.
func (s *Service) equal(o *Service) bool {
	if s.Namespace != o.Namespace || s.Name != o.Name || s.ClusterIP != o.ClusterIP || len(s.Ports) != len(o.Ports) {
		return false
	}
	for i := range s.Ports {
		a, b := &s.Ports[i], &o.Ports[i]
		if a.Name != b.Name || a.Protocol != b.Protocol || a.Port != b.Port || a.NodePort != b.NodePort || len(a.Endpoints) != len(b.Endpoints) {
			return false
		}
		for j := range a.Endpoints {
			if a.Endpoints[j] != b.Endpoints[j] {
				return false
			}
		}
	}
	return true
}
