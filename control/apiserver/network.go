package apiserver

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
)

// Network is the cluster's address plan: the ranges that services' cluster
// IPs, node ports and nodes' pod CIDRs are allocated from. A zero field
// takes its default.
type Network struct {
	// ServiceCIDR holds the cluster IPs (DefaultServiceCIDR). Its network
	// and broadcast addresses and its first address (.1, which Kubernetes
	// gives the kubernetes service) are never allocated.
	ServiceCIDR netip.Prefix
	// NodePorts is the range of node ports (DefaultNodePorts).
	NodePorts PortRange
	// ClusterCIDR holds every pod IP (DefaultClusterCIDR); each node gets
	// a part of it of NodeCIDRMaskSize bits (DefaultNodeCIDRMaskSize).
	ClusterCIDR      netip.Prefix
	NodeCIDRMaskSize int
}

// PortRange is a range of ports, both ends included.
type PortRange struct{ Min, Max int32 }

func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.Min, r.Max) }

func (r PortRange) contains(p int32) bool { return p >= r.Min && p <= r.Max }

// The defaults of Network, as Kubernetes' (kubeadm's and flannel's).
var (
	DefaultServiceCIDR      = netip.MustParsePrefix("10.96.0.0/16")
	DefaultClusterCIDR      = netip.MustParsePrefix("10.244.0.0/16")
	DefaultNodePorts        = PortRange{Min: 30000, Max: 32767}
	DefaultNodeCIDRMaskSize = 24
)

// ParsePortRange reads "30000-32767".
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, ok := strings.Cut(strings.TrimSpace(s), "-")
	a, err1 := strconv.ParseInt(strings.TrimSpace(lo), 10, 32)
	b, err2 := strconv.ParseInt(strings.TrimSpace(hi), 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return PortRange{}, fmt.Errorf("invalid port range %q: want MIN-MAX, such as 30000-32767", s)
	}
	r := PortRange{Min: int32(a), Max: int32(b)}
	if r.Min < 1 || r.Max > 65535 || r.Min > r.Max {
		return PortRange{}, fmt.Errorf("invalid port range %q: ports must be 1-65535 and MIN no more than MAX", s)
	}
	return r, nil
}

// withDefaults fills in the zero fields.
func (n Network) withDefaults() Network {
	if !n.ServiceCIDR.IsValid() {
		n.ServiceCIDR = DefaultServiceCIDR
	}
	if !n.ClusterCIDR.IsValid() {
		n.ClusterCIDR = DefaultClusterCIDR
	}
	if n.NodePorts == (PortRange{}) {
		n.NodePorts = DefaultNodePorts
	}
	if n.NodeCIDRMaskSize == 0 {
		n.NodeCIDRMaskSize = DefaultNodeCIDRMaskSize
	}
	n.ServiceCIDR, n.ClusterCIDR = n.ServiceCIDR.Masked(), n.ClusterCIDR.Masked()
	return n
}

// Validate checks the plan, with its defaults; each error names the
// setting as the flags of skiff server do.
func (n Network) Validate() error {
	n = n.withDefaults()
	bits := n.ClusterCIDR.Addr().BitLen()
	switch {
	case n.ServiceCIDR.Bits() > n.ServiceCIDR.Addr().BitLen()-3:
		return fmt.Errorf("service-cidr %s: too small: it needs at least 8 addresses (a /%d)", n.ServiceCIDR, n.ServiceCIDR.Addr().BitLen()-3)
	case n.NodeCIDRMaskSize <= n.ClusterCIDR.Bits() || n.NodeCIDRMaskSize > bits-2:
		return fmt.Errorf("node-cidr-mask-size %d: must be longer than cluster-cidr's /%d and at most %d", n.NodeCIDRMaskSize, n.ClusterCIDR.Bits(), bits-2)
	case n.NodeCIDRMaskSize-n.ClusterCIDR.Bits() > 20:
		return fmt.Errorf("node-cidr-mask-size %d: cluster-cidr %s would hold more than 2^20 node CIDRs", n.NodeCIDRMaskSize, n.ClusterCIDR)
	case n.ServiceCIDR.Overlaps(n.ClusterCIDR):
		return fmt.Errorf("service-cidr %s overlaps cluster-cidr %s", n.ServiceCIDR, n.ClusterCIDR)
	case n.NodePorts.Min < 1 || n.NodePorts.Max > 65535 || n.NodePorts.Min > n.NodePorts.Max:
		return fmt.Errorf("service-node-port-range %s: ports must be 1-65535 and MIN no more than MAX", n.NodePorts)
	}
	return nil
}

// maxScan bounds the addresses a pick looks at, for a huge (IPv6) range.
const maxScan = 1 << 20

// serviceIPRange is the offsets in the service CIDR that may be allocated:
// not the network address, not .1, not the broadcast address.
func (n Network) serviceIPRange() (lo, count uint64) {
	size := uint64(maxScan)
	if hostBits := n.ServiceCIDR.Addr().BitLen() - n.ServiceCIDR.Bits(); hostBits < 20 {
		size = 1 << hostBits
	}
	return 2, size - 3 // offsets 2 .. size-2
}

// pickServiceIP returns a free address of the service CIDR (random, so that
// concurrent creates seldom pick the same), or false when none is.
func (n Network) pickServiceIP(used map[string]bool) (netip.Addr, bool) {
	lo, count := n.serviceIPRange()
	start := rand.Uint64N(count)
	for i := uint64(0); i < count; i++ {
		a := addOffset(n.ServiceCIDR.Addr(), lo+(start+i)%count)
		if !used[a.String()] {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// serviceIPAllowed says whether a may be allocated.
func (n Network) serviceIPAllowed(a netip.Addr) bool {
	if !n.ServiceCIDR.Contains(a) {
		return false
	}
	lo, count := n.serviceIPRange()
	for off := uint64(0); off < lo; off++ {
		if a == addOffset(n.ServiceCIDR.Addr(), off) {
			return false
		}
	}
	if hostBits := n.ServiceCIDR.Addr().BitLen() - n.ServiceCIDR.Bits(); hostBits < 20 {
		return a != addOffset(n.ServiceCIDR.Addr(), lo+count) // the broadcast address
	}
	return true
}

// pickNodePort returns a free node port, or false when none is.
func (n Network) pickNodePort(used map[string]bool) (int32, bool) {
	count := int64(n.NodePorts.Max-n.NodePorts.Min) + 1
	start := rand.Int64N(count)
	for i := int64(0); i < count; i++ {
		p := n.NodePorts.Min + int32((start+i)%count)
		if !used[strconv.Itoa(int(p))] {
			return p, true
		}
	}
	return 0, false
}

// nodeCIDRs is how many node CIDRs the cluster CIDR holds.
func (n Network) nodeCIDRs() uint64 {
	return 1 << (n.NodeCIDRMaskSize - n.ClusterCIDR.Bits())
}

// nodeCIDR is the i-th node CIDR.
func (n Network) nodeCIDR(i uint64) netip.Prefix {
	shift := n.ClusterCIDR.Addr().BitLen() - n.NodeCIDRMaskSize
	return netip.PrefixFrom(addOffsetShifted(n.ClusterCIDR.Addr(), i, shift), n.NodeCIDRMaskSize)
}

// pickNodeCIDR returns the first free node CIDR, as Kubernetes' range
// allocator does, or false when none is.
func (n Network) pickNodeCIDR(used map[string]bool) (netip.Prefix, bool) {
	for i := uint64(0); i < n.nodeCIDRs(); i++ {
		p := n.nodeCIDR(i)
		if !used[cidrName(p)] {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// nodeCIDRAllowed says whether p is one of the node CIDRs.
func (n Network) nodeCIDRAllowed(p netip.Prefix) bool {
	return p.Bits() == n.NodeCIDRMaskSize && p.Masked() == p && n.ClusterCIDR.Contains(p.Addr())
}

// cidrName is a CIDR as a claim key's last part: 10.244.3.0-24.
func cidrName(p netip.Prefix) string { return p.Addr().String() + "-" + strconv.Itoa(p.Bits()) }

// addOffset returns a + off.
func addOffset(a netip.Addr, off uint64) netip.Addr { return addOffsetShifted(a, off, 0) }

// addOffsetShifted returns a + off<<shift.
func addOffsetShifted(a netip.Addr, off uint64, shift int) netip.Addr {
	b := a.As16()
	// Add off<<shift to the 128-bit big-endian number b, byte by byte.
	carry := uint64(0)
	for i := 15; i >= 0; i-- {
		bitPos := (15 - i) * 8 // the value of b[i]'s lowest bit
		var add uint64
		if rel := bitPos - shift; rel >= 0 && rel < 64 {
			add = (off >> rel) & 0xff
		} else if rel < 0 && rel > -8 {
			add = (off << -rel) & 0xff
		}
		sum := uint64(b[i]) + add + carry
		b[i] = byte(sum)
		carry = sum >> 8
	}
	out := netip.AddrFrom16(b)
	if a.Is4() {
		return out.Unmap()
	}
	return out
}
