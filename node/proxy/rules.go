package proxy

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The chains the proxy owns. Every chain it makes starts with chainPrefix,
// which is how a full sync and Cleanup find them in the kernel.
const (
	chainPrefix       = "SKIFF-"
	servicesChain     = "SKIFF-SERVICES"    // nat: cluster IPs; filter: rejects for ports without endpoints
	nodePortsChain    = "SKIFF-NODEPORTS"   // nat: node ports on local addresses
	postroutingChain  = "SKIFF-POSTROUTING" // nat: masquerades marked packets
	markMasqChain     = "SKIFF-MARK-MASQ"   // nat: marks a packet for masquerading
	serviceChainPrefx = "SKIFF-SVC-"        // nat: one per service port, spreads over endpoints
	endpointChainPrfx = "SKIFF-SEP-"        // nat: one per endpoint of a service port, DNATs
)

const (
	tableNAT    = "nat"
	tableFilter = "filter"
)

// jump is a rule in a built-in chain that sends packets to one of ours. The
// jumps are the only rules the proxy puts outside its own chains.
type jump struct {
	table, chain string
	spec         []string
}

// jumps lists the proxy's rules in the built-in chains, in the form
// go-iptables takes them.
func jumps() []jump {
	portals := []string{"-m", "comment", "--comment", "skiff service portals", "-j", servicesChain}
	rejects := []string{"-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment", "skiff services without endpoints", "-j", servicesChain}
	return []jump{
		{tableNAT, "PREROUTING", portals},
		{tableNAT, "OUTPUT", portals},
		{tableNAT, "POSTROUTING", []string{"-m", "comment", "--comment", "skiff postrouting rules", "-j", postroutingChain}},
		{tableFilter, "INPUT", rejects},
		{tableFilter, "FORWARD", rejects},
		{tableFilter, "OUTPUT", rejects},
	}
}

// line is the jump as the kernel lists it ("-A CHAIN ...").
func (j jump) line() string {
	parts := []string{"-A", j.chain}
	for i, a := range j.spec {
		if i > 0 && j.spec[i-1] == "--comment" {
			a = strconv.Quote(a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// chain is one of the proxy's chains with its whole content, as lines for
// iptables-restore ("-A NAME ...").
//
// Rules are written in the canonical form the kernel lists them in
// (iptables -S): the address and protocol matches (-s, -d, -p) first,
// then the other matches in order, MARK as --set-xmark, probabilities as
// the statistic match stores them. A full sync compares the listing with
// the rendering to write only the chains that differ; a rule not in
// canonical form is still correct, but makes every full sync rewrite its
// chain (TestRenderingIsCanonical catches that).
type chain struct {
	table string
	name  string
	rules []string
}

// ruleConfig is what rendering needs besides the services.
type ruleConfig struct {
	clusterCIDR string // "" : traffic to cluster IPs is not masqueraded by source
	serviceCIDR string // "" : no catch-all refusal of unknown service addresses
	masqMark    uint32
}

// rejectWith is how a connection to a port without endpoints is refused:
// a TCP reset for TCP, which works for the node's own connections too
// (an ICMP error is not delivered to a local socket whose route goes via
// the loopback device, see RoutesConfig), and port unreachable for UDP.
func rejectWith(proto string) string {
	if proto == "tcp" {
		return "tcp-reset"
	}
	return "icmp-port-unreachable"
}

// rendered is what one service contributes to the kernel: its own chains
// (one per service port with endpoints, one per endpoint) and its lines in
// the shared chains.
type rendered struct {
	svc      Service
	chains   []chain  // nat SKIFF-SVC-* and SKIFF-SEP-*
	services []string // lines of nat SKIFF-SERVICES
	nodePort []string // lines of nat SKIFF-NODEPORTS
	rejects  []string // lines of filter SKIFF-SERVICES
}

// hashName returns prefix followed by a stable hash of parts, 16 base32
// characters: 26 characters in all, within iptables' 28.
func hashName(prefix string, parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return prefix + base32.StdEncoding.EncodeToString(h[:])[:16]
}

// serviceChainName names the chain of one service port.
func serviceChainName(ns, name, port string, proto Protocol) string {
	return hashName(serviceChainPrefx, ns, name, port, string(proto))
}

// endpointChainName names the chain of one endpoint of a service port.
func endpointChainName(ns, name, port string, proto Protocol, ep Endpoint) string {
	return hashName(endpointChainPrfx, ns, name, port, string(proto), ep.IP, strconv.Itoa(int(ep.Port)))
}

// probability renders 1/n as the statistic match stores and lists it: a
// fraction of 2^31, printed with 11 decimals.
func probability(n int) string {
	q := math.Round(0x80000000 / float64(n))
	return fmt.Sprintf("%.11f", q/0x80000000)
}

// render makes the rules of one (valid) service. It is a pure function.
func render(svc *Service, cfg ruleConfig) *rendered {
	r := &rendered{svc: svc.clone()}
	for _, p := range svc.Ports {
		proto := strings.ToLower(string(p.Protocol))
		portName := svc.Namespace + "/" + svc.Name
		if p.Name != "" {
			portName += ":" + p.Name
		}
		// dst is the cluster IP port, split around the comment as the
		// kernel lists it: "-d IP/32 -p PROTO", "-m PROTO --dport PORT".
		dst := fmt.Sprintf("-d %s/32 -p %s", svc.ClusterIP, proto)
		dport := fmt.Sprintf("-m %s --dport %d", proto, p.Port)
		if len(p.Endpoints) == 0 {
			r.rejects = append(r.rejects, fmt.Sprintf(`-A %s %s -m comment --comment "%s has no endpoints" %s -j REJECT --reject-with %s`,
				servicesChain, dst, portName, dport, rejectWith(proto)))
			if p.NodePort != 0 {
				r.rejects = append(r.rejects, fmt.Sprintf(`-A %s -p %s -m comment --comment "%s has no endpoints" -m addrtype --dst-type LOCAL -m %s --dport %d -j REJECT --reject-with %s`,
					servicesChain, proto, portName, proto, p.NodePort, rejectWith(proto)))
			}
			continue
		}
		svcChain := serviceChainName(svc.Namespace, svc.Name, p.Name, p.Protocol)
		r.services = append(r.services, fmt.Sprintf(`-A %s %s -m comment --comment "%s cluster IP" %s -j %s`,
			servicesChain, dst, portName, dport, svcChain))
		if p.NodePort != 0 {
			np := fmt.Sprintf(`-A %s -p %s -m comment --comment "%s node port" -m %s --dport %d`, nodePortsChain, proto, portName, proto, p.NodePort)
			r.nodePort = append(r.nodePort, np+" -j "+markMasqChain, np+" -j "+svcChain)
		}
		sc := chain{table: tableNAT, name: svcChain}
		if cfg.clusterCIDR != "" {
			sc.rules = append(sc.rules, fmt.Sprintf(`-A %s ! -s %s %s -m comment --comment "%s cluster IP" %s -j %s`,
				svcChain, cfg.clusterCIDR, dst, portName, dport, markMasqChain))
		}
		var seps []chain
		for i, ep := range p.Endpoints {
			sepChain := endpointChainName(svc.Namespace, svc.Name, p.Name, p.Protocol, ep)
			to := ep.IP + ":" + strconv.Itoa(int(ep.Port))
			if left := len(p.Endpoints) - i; left > 1 {
				sc.rules = append(sc.rules, fmt.Sprintf(`-A %s -m comment --comment "%s -> %s" -m statistic --mode random --probability %s -j %s`,
					svcChain, portName, to, probability(left), sepChain))
			} else {
				sc.rules = append(sc.rules, fmt.Sprintf(`-A %s -m comment --comment "%s -> %s" -j %s`, svcChain, portName, to, sepChain))
			}
			seps = append(seps, chain{table: tableNAT, name: sepChain, rules: []string{
				// Hairpin: an endpoint reaching itself through the service
				// must see the reply come from the node, not from itself.
				// (No comment and no "-m tcp" here: the jump to this
				// chain has the comment, and each match less per rule
				// takes a few percent off a full sync.)
				fmt.Sprintf(`-A %s -s %s/32 -j %s`, sepChain, ep.IP, markMasqChain),
				fmt.Sprintf(`-A %s -p %s -j DNAT --to-destination %s`, sepChain, proto, to),
			}})
		}
		r.chains = append(r.chains, sc)
		r.chains = append(r.chains, seps...)
	}
	return r
}

// staticChains are the proxy's chains whose content does not depend on the
// services.
func staticChains(cfg ruleConfig) []chain {
	mark := fmt.Sprintf("0x%x", cfg.masqMark)
	return []chain{
		// --set-xmark V/M sets the mark to (mark & ^M) ^ V: V/V is
		// --or-mark V, V/0x0 is --xor-mark V.
		{tableNAT, markMasqChain, []string{fmt.Sprintf("-A %s -j MARK --set-xmark %s/%s", markMasqChain, mark, mark)}},
		{tableNAT, postroutingChain, []string{
			fmt.Sprintf("-A %s -m mark ! --mark %s/%s -j RETURN", postroutingChain, mark, mark),
			fmt.Sprintf("-A %s -j MARK --set-xmark %s/0x0", postroutingChain, mark),
			fmt.Sprintf(`-A %s -m comment --comment "skiff service traffic requiring SNAT" -j MASQUERADE`, postroutingChain),
		}},
	}
}

// sharedChains assembles the chains that every service writes lines in,
// from the services in the order given.
func sharedChains(rs []*rendered, cfg ruleConfig) []chain {
	services := chain{table: tableNAT, name: servicesChain}
	nodePorts := chain{table: tableNAT, name: nodePortsChain}
	rejects := chain{table: tableFilter, name: servicesChain}
	for _, r := range rs {
		services.rules = append(services.rules, r.services...)
		nodePorts.rules = append(nodePorts.rules, r.nodePort...)
		rejects.rules = append(rejects.rules, r.rejects...)
	}
	// Node ports last, so that a cluster IP that is also local is matched
	// as a cluster IP first.
	services.rules = append(services.rules, fmt.Sprintf(`-A %s -m comment --comment "skiff service node ports" -m addrtype --dst-type LOCAL -j %s`,
		servicesChain, nodePortsChain))
	if cfg.serviceCIDR != "" {
		// Last: a service address nothing above matched. (A DNATed
		// packet has an endpoint's address by the time filter sees it.)
		for _, proto := range []string{"tcp", "udp"} {
			rejects.rules = append(rejects.rules, fmt.Sprintf(`-A %s -d %s -p %s -m comment --comment "service addresses without a rule" -j REJECT --reject-with %s`,
				servicesChain, cfg.serviceCIDR, proto, rejectWith(proto)))
		}
	}
	return []chain{services, nodePorts, rejects}
}

// restore is the input of one iptables-restore --noflush run: chains to
// (re)write whole and chains to delete, per table.
type restore struct {
	write  map[string][]chain  // table -> chains to flush and fill
	remove map[string][]string // table -> chains to flush and delete
	// wholeCache, when set, starts each table with a listing ("-S"): see
	// manyChains.
	wholeCache bool
	// listed is the number of chains a listing just found in the kernel
	// (0: not listed); see manyChains.
	listed int
}

// manyChains is the number of chains a restore names beyond which it asks
// iptables-nft for its whole-table cache. Under --noflush, iptables-nft
// 1.8.9 keeps the names of the chains a restore mentions in a sorted list
// to fetch them alone, and inserts each name with a linear walk: quadratic,
// about 10 s for 1,000 services of 10 endpoints. A command naming no chain
// makes it fetch the table whole instead, and "-S" is the only such command
// that changes nothing (its listing of the table as it was is discarded).
// Below the threshold the per-chain fetch is the cheaper one.
//
// The whole-table fetch costs in proportion to the table, the per-chain one
// more than in proportion to the chains named: over 11,000 chains, a
// restore naming 2,100 takes 0.17 s alone and 0.38 s with the listing,
// one naming 4,200 0.42 s and 0.45 s, one naming 9,800 2.1 s and 0.6 s.
// So when the size of the table is known (a full sync lists it first),
// the listing is asked for only beyond a third of its chains.
const manyChains = 200

// wantsWholeCache reports whether the restore should ask iptables-nft for
// the whole tables.
func (r *restore) wantsWholeCache() bool {
	return r.chains() > max(manyChains, r.listed/3)
}

func newRestore() *restore {
	return &restore{write: map[string][]chain{}, remove: map[string][]string{}}
}

func (r *restore) add(c chain)            { r.write[c.table] = append(r.write[c.table], c) }
func (r *restore) del(table, name string) { r.remove[table] = append(r.remove[table], name) }
func (r *restore) empty() bool            { return len(r.write) == 0 && len(r.remove) == 0 }
func (r *restore) chains() int {
	n := 0
	for _, cs := range r.write {
		n += len(cs)
	}
	for _, names := range r.remove {
		n += len(names)
	}
	return n
}

func (r *restore) counts() (chains, rules int) {
	for _, cs := range r.write {
		for _, c := range cs {
			chains++
			rules += len(c.rules)
		}
	}
	return chains, rules
}

// bytes renders the input. Declaring a chain (":NAME - [0:0]") flushes it
// even under --noflush, or creates it; every chain written or deleted is
// declared first, then filled, and the deleted ones go last, when nothing
// that this run wrote refers to them any more.
func (r *restore) bytes() []byte {
	var b strings.Builder
	for _, table := range []string{tableNAT, tableFilter} {
		if len(r.write[table]) == 0 && len(r.remove[table]) == 0 {
			continue
		}
		b.WriteString("*" + table + "\n")
		if r.wholeCache {
			b.WriteString("-S\n")
		}
		for _, c := range r.write[table] {
			b.WriteString(":" + c.name + " - [0:0]\n")
		}
		for _, name := range r.remove[table] {
			b.WriteString(":" + name + " - [0:0]\n")
		}
		for _, c := range r.write[table] {
			for _, rule := range c.rules {
				b.WriteString(rule)
				b.WriteByte('\n')
			}
		}
		for _, name := range r.remove[table] {
			b.WriteString("-X " + name + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	return []byte(b.String())
}
