package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"skiff.dev/skiff/netns"
)

// cluster is a test's small node: a "node" namespace with a bridge that
// two "pod" namespaces hang off, a "client" namespace on a link of its own
// (the outside world), and an uplink that goes nowhere (a link to a
// namespace, "world", that does not forward, holding the node's default
// route as a real uplink would). Nothing is
// connected to the root namespace.
type cluster struct {
	node, client string
	pods         map[string]string // pod name -> namespace path
	podIPs       map[string]string
}

const (
	bridgeIP   = "10.99.1.1"
	nodeIP     = "10.98.0.1" // the node's address on the client's link
	clientIP   = "10.98.0.2"
	uplinkGW   = "10.97.0.2"
	serverPort = 8080
)

func newCluster(t *testing.T) *cluster {
	t.Helper()
	requireRoot(t)
	dir := nsDir(t)
	c := &cluster{
		node:   newNS(t, dir, "node"),
		client: newNS(t, dir, "client"),
		pods:   map[string]string{},
		podIPs: map[string]string{"pod1": "10.99.1.2", "pod2": "10.99.1.3"},
	}
	node := handleAt(t, c.node)
	setSysctl(t, c.node, "net/ipv4/ip_forward", "1")

	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	must(t, "add bridge", node.LinkAdd(br))
	addrUp(t, node, "br0", bridgeIP+"/24")

	world := newNS(t, dir, "world") // does not forward: what reaches it ends there
	c.veth(t, node, "uplink", world, uplinkGW+"/24", "10.97.0.1", nil)
	addrUp(t, node, "uplink", "10.97.0.1/24")
	must(t, "add default route", node.RouteAdd(&netlink.Route{Gw: net.ParseIP(uplinkGW)}))

	for _, name := range []string{"pod1", "pod2"} {
		path := newNS(t, dir, name)
		c.pods[name] = path
		c.veth(t, node, "v"+name, path, c.podIPs[name]+"/24", bridgeIP, br)
		serve(t, path, name)
	}
	c.veth(t, node, "vclient", c.client, clientIP+"/24", nodeIP, nil)
	addrUp(t, node, "vclient", nodeIP+"/24")
	return c
}

// veth links the node to the namespace at path: hostName on the node side
// (enslaved to br when given), eth0 with addr on the other side, whose
// default route goes via gw.
func (c *cluster) veth(t *testing.T, node *netlink.Handle, hostName, path, addr, gw string, br *netlink.Bridge) {
	t.Helper()
	ns, err := vnetns.GetFromPath(path)
	must(t, "open namespace", err)
	defer ns.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns))}
	must(t, "add veth "+hostName, node.LinkAdd(veth))
	host, err := node.LinkByName(hostName)
	must(t, "find veth "+hostName, err)
	if br != nil {
		must(t, "enslave "+hostName, node.LinkSetMaster(host, br))
		// As CNI's bridge plugin with hairpinMode: a pod reaching itself
		// through a service gets its packet back on the port it came in on.
		must(t, "hairpin "+hostName, node.LinkSetHairpin(host, true))
	}
	must(t, "bring up "+hostName, node.LinkSetUp(host))
	h := handleAt(t, path)
	addrUp(t, h, "eth0", addr)
	must(t, "add default route in "+path, h.RouteAdd(&netlink.Route{Gw: net.ParseIP(gw)}))
}

func handleAt(t *testing.T, path string) *netlink.Handle {
	t.Helper()
	ns, err := vnetns.GetFromPath(path)
	must(t, "open namespace", err)
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	must(t, "netlink handle", err)
	t.Cleanup(h.Close)
	return h
}

func addrUp(t *testing.T, h *netlink.Handle, name, cidr string) {
	t.Helper()
	link, err := h.LinkByName(name)
	must(t, "find "+name, err)
	addr, err := netlink.ParseAddr(cidr)
	must(t, "parse "+cidr, err)
	must(t, "address "+name, h.AddrAdd(link, addr))
	must(t, "bring up "+name, h.LinkSetUp(link))
}

func must(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// serve answers every connection on serverPort in the namespace with the
// pod's name, until the test ends.
func serve(t *testing.T, path, name string) {
	t.Helper()
	f, err := netns.ListenTCP(path, serverPort)
	must(t, "listen in "+name, err)
	l, err := net.FileListener(f)
	f.Close()
	must(t, "listener in "+name, err)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(conn, name+"\n")
			conn.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); wg.Wait() })
}

// dial connects from the namespace at path to addr and returns the line
// the server wrote.
func dial(path, addr string) (string, error) {
	var line string
	err := netns.Do(path, func() error {
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		line, err = bufio.NewReader(conn).ReadString('\n')
		return err
	})
	return strings.TrimSpace(line), err
}

// seen dials addr n times from path and counts the answers by server.
func seen(t *testing.T, path, addr string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		name, err := dial(path, addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		got[name]++
	}
	return got
}

func addrPort(ip string, port int) string {
	return netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(port)).String()
}

// setSysctl sets a per-namespace sysctl (a path under /proc/sys) in the
// namespace at ns.
func setSysctl(t *testing.T, ns, name, value string) {
	t.Helper()
	must(t, "set "+name, netns.Do(ns, func() error {
		return os.WriteFile("/proc/sys/"+name, []byte(value+"\n"), 0o644)
	}))
}

// serveUDP answers every datagram on port in the namespace with the pod's
// name, until the test ends.
func serveUDP(t *testing.T, path, name string, port int) {
	t.Helper()
	var pc net.PacketConn
	must(t, "listen udp in "+name, netns.Do(path, func() error {
		var err error
		pc, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", port))
		return err
	}))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 64)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(name), from)
		}
	}()
	t.Cleanup(func() { pc.Close(); wg.Wait() })
}

// udpClient is a connected UDP socket in a namespace: every datagram it
// sends has the same source port, as a long-lived client's would.
type udpClient struct{ conn net.Conn }

func newUDPClient(t *testing.T, path, addr string) *udpClient {
	t.Helper()
	var conn net.Conn
	must(t, "dial udp "+addr, netns.Do(path, func() error {
		var err error
		conn, err = net.Dial("udp4", addr)
		return err
	}))
	t.Cleanup(func() { conn.Close() })
	return &udpClient{conn}
}

// ask sends a datagram and returns the answer.
func (c *udpClient) ask() (string, error) {
	if _, err := c.conn.Write([]byte("?")); err != nil {
		return "", err
	}
	c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	n, err := c.conn.Read(buf)
	return string(buf[:n]), err
}
