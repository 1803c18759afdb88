package main

import (
	"fmt"
	"net/netip"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/control/apiserver"
)

// networkFlags are the cluster's address plan (skiff server, skiff dev):
// where pod CIDRs, cluster IPs and node ports are allocated from. Every
// server of a cluster must be given the same.
type networkFlags struct {
	clusterCIDR   string
	nodeMaskSize  int
	serviceCIDR   string
	nodePortRange string
}

func (n *networkFlags) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&n.clusterCIDR, "cluster-cidr", apiserver.DefaultClusterCIDR.String(), "range of pod IPs; each node gets a part of it (--node-cidr-mask-size) as its pod CIDR")
	f.IntVar(&n.nodeMaskSize, "node-cidr-mask-size", apiserver.DefaultNodeCIDRMaskSize, "prefix length of each node's pod CIDR, carved from --cluster-cidr")
	f.StringVar(&n.serviceCIDR, "service-cidr", apiserver.DefaultServiceCIDR.String(), "range of services' cluster IPs; its first address (.1) is reserved; must not overlap --cluster-cidr")
	f.StringVar(&n.nodePortRange, "service-node-port-range", apiserver.DefaultNodePorts.String(), "range of ports, MIN-MAX, that NodePort services are given on every node")
}

// network checks the flags and returns the plan. A flag left empty (or 0)
// takes its default, as for options built without flags (tests, bench).
func (n *networkFlags) network() (apiserver.Network, error) {
	var (
		out apiserver.Network
		err error
	)
	if n.clusterCIDR != "" {
		if out.ClusterCIDR, err = parseCIDR(n.clusterCIDR); err != nil {
			return out, fmt.Errorf("--cluster-cidr: %w", err)
		}
	}
	if n.serviceCIDR != "" {
		if out.ServiceCIDR, err = parseCIDR(n.serviceCIDR); err != nil {
			return out, fmt.Errorf("--service-cidr: %w", err)
		}
	}
	if n.nodePortRange != "" {
		if out.NodePorts, err = apiserver.ParsePortRange(n.nodePortRange); err != nil {
			return out, fmt.Errorf("--service-node-port-range: %w", err)
		}
	}
	out.NodeCIDRMaskSize = n.nodeMaskSize
	if n.nodeMaskSize < 0 {
		return out, fmt.Errorf("--node-cidr-mask-size: invalid value %d: must be a prefix length", n.nodeMaskSize)
	}
	if err := out.Validate(); err != nil {
		return out, fmt.Errorf("--%w", err) // its errors begin with the setting's name
	}
	return out, nil
}

// parseCIDR reads a network in CIDR notation, which must be the network's
// own address (10.244.0.0/16, not 10.244.1.1/16).
func parseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid value %q: must be a CIDR such as 10.96.0.0/16", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("invalid value %q: has host bits set; did you mean %s?", s, p.Masked())
	}
	return p, nil
}
