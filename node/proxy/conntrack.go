package proxy

import (
	"fmt"
	"net"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// staleFlow names the conntrack entries of one UDP endpoint that left a
// service port. UDP has no connection to end: without deleting its entry,
// a client that keeps sending from the same socket keeps reaching the
// endpoint that is gone (as kube-proxy also does, by deleting them).
type staleFlow struct {
	clusterIP string
	port      int32
	nodePort  int32
	ep        Endpoint
}

// staleUDPFlows lists the UDP endpoints of old that next (nil: the service
// is gone) no longer has, port by port.
func staleUDPFlows(old, next *Service) []staleFlow {
	var out []staleFlow
	for _, op := range old.Ports {
		if op.Protocol != UDP {
			continue
		}
		var kept []Endpoint
		if next != nil && next.ClusterIP == old.ClusterIP {
			for _, np := range next.Ports {
				if np.Name == op.Name && np.Protocol == op.Protocol && np.Port == op.Port && np.NodePort == op.NodePort {
					kept = np.Endpoints
				}
			}
		}
		for _, ep := range op.Endpoints {
			if !slices.Contains(kept, ep) {
				out = append(out, staleFlow{clusterIP: old.ClusterIP, port: op.Port, nodePort: op.NodePort, ep: ep})
			}
		}
	}
	return out
}

// forgetFlows deletes the conntrack entries of stale UDP endpoints: those
// to the cluster IP port, and to the node port on any address, that were
// DNATed to the endpoint.
func (p *Proxier) forgetFlows(flows []staleFlow) error {
	if len(flows) == 0 {
		return nil
	}
	var filters []netlink.CustomConntrackFilter
	for _, f := range flows {
		epIP := net.ParseIP(f.ep.IP)
		cf := &netlink.ConntrackFilter{}
		err := cf.AddProtocol(unix.IPPROTO_UDP)
		if err == nil {
			err = cf.AddIP(netlink.ConntrackOrigDstIP, net.ParseIP(f.clusterIP))
		}
		if err == nil {
			err = cf.AddPort(netlink.ConntrackOrigDstPort, uint16(f.port))
		}
		if err == nil {
			err = cf.AddIP(netlink.ConntrackReplySrcIP, epIP)
		}
		if err != nil {
			return fmt.Errorf("forget UDP flows to %s:%d: %w", f.ep.IP, f.ep.Port, err)
		}
		filters = append(filters, cf)
		if f.nodePort != 0 {
			nf := &netlink.ConntrackFilter{}
			err := nf.AddProtocol(unix.IPPROTO_UDP)
			if err == nil {
				err = nf.AddPort(netlink.ConntrackOrigDstPort, uint16(f.nodePort))
			}
			if err == nil {
				err = nf.AddIP(netlink.ConntrackReplySrcIP, epIP)
			}
			if err != nil {
				return fmt.Errorf("forget UDP flows to %s:%d: %w", f.ep.IP, f.ep.Port, err)
			}
			filters = append(filters, nf)
		}
	}
	return p.enter(func() error {
		h, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
		if err != nil {
			return fmt.Errorf("forget UDP flows: netlink: %w", err)
		}
		defer h.Close()
		if err := h.SetSocketTimeout(p.cfg.ExecTimeout); err != nil {
			return fmt.Errorf("forget UDP flows: netlink: %w", err)
		}
		n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, filters...)
		if err != nil {
			return fmt.Errorf("forget UDP flows: %w", err)
		}
		p.log.Debug("forgot UDP flows of removed endpoints", "endpoints", len(flows), "flows", n)
		return nil
	})
}
