package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"skiff.dev/skiff/control/cluster/pki"
	"skiff.dev/skiff/netns"
	"skiff.dev/skiff/runtime/image/imagetest"
)

// testNet is a small network of test hosts, each a network namespace the
// test creates, joined by a bridge in a namespace of its own (the switch):
// nothing of it touches the root namespace, and it has no route out of
// the machine. Hosts are 10.77.0.10, .11, ... in the order given.
type testNet struct {
	t     *testing.T
	dir   string
	sw    string
	hosts map[string]*testHost
}

// testHost is one host of a testNet.
type testHost struct {
	name string
	ns   string // the namespace's pin
	ip   string
}

const testNetPrefix = "10.77.0."

func newTestNet(t *testing.T, names ...string) *testNet {
	t.Helper()
	n := &testNet{t: t, dir: t.TempDir(), hosts: map[string]*testHost{}}
	// Registered after TempDir: runs before the directory is removed.
	t.Cleanup(n.remove)
	var err error
	if n.sw, err = netns.Create(n.dir, "switch"); err != nil {
		t.Fatal(err)
	}
	sw := n.handle(n.sw)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := sw.LinkAdd(br); err != nil {
		t.Fatalf("add the test bridge: %v", err)
	}
	if err := sw.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	for i, name := range names {
		h := &testHost{name: name, ip: fmt.Sprintf("%s%d", testNetPrefix, 10+i)}
		if h.ns, err = netns.Create(n.dir, name); err != nil {
			t.Fatal(err)
		}
		n.hosts[name] = h
		hostNS, err := vnetns.GetFromPath(h.ns)
		if err != nil {
			t.Fatal(err)
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "to-" + name, MasterIndex: br.Attrs().Index}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(hostNS))}
		err = sw.LinkAdd(veth)
		hostNS.Close()
		if err != nil {
			t.Fatalf("add the veth of host %s: %v", name, err)
		}
		if err := sw.LinkSetUp(veth); err != nil {
			t.Fatal(err)
		}
		hh := n.handle(h.ns)
		eth0, err := hh.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		addr, _ := netlink.ParseAddr(h.ip + "/24")
		if err := hh.AddrAdd(eth0, addr); err != nil {
			t.Fatal(err)
		}
		if err := hh.LinkSetUp(eth0); err != nil {
			t.Fatal(err)
		}
		hh.Close()
		// A node forwards its pods' traffic.
		if err := netns.Do(h.ns, func() error {
			return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
		}); err != nil {
			t.Fatalf("enable forwarding on %s: %v", name, err)
		}
	}
	sw.Close()
	return n
}

func (n *testNet) handle(path string) *netlink.Handle {
	n.t.Helper()
	ns, err := vnetns.GetFromPath(path)
	if err != nil {
		n.t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		n.t.Fatal(err)
	}
	return h
}

// remove deletes the hosts' and the switch's namespaces: with them go
// every link, address, route and iptables rule made in them.
func (n *testNet) remove() {
	for _, h := range n.hosts {
		if err := netns.Delete(h.ns); err != nil {
			n.t.Errorf("delete test host %s: %v", h.name, err)
		}
	}
	if n.sw != "" {
		if err := netns.Delete(n.sw); err != nil {
			n.t.Errorf("delete the test switch: %v", err)
		}
	}
}

// describe prints each host's addresses, routes and nat rules, for a
// failure's message.
func (n *testNet) describe() string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(n.hosts)) {
		h := n.hosts[name]
		fmt.Fprintf(&b, "--- host %s (%s)\n", name, h.ip)
		for _, args := range [][]string{{"ip", "-br", "addr"}, {"ip", "route"}, {"iptables-save", "-t", "nat"}} {
			out, _ := exec.Command("nsenter", append([]string{"--net=" + h.ns}, args...)...).CombinedOutput()
			fmt.Fprintf(&b, "$ %s\n%s", strings.Join(args, " "), out)
		}
	}
	return b.String()
}

// get fetches url (http://IP:PORT/) from inside host h with HTTP/1.0 and
// returns the body, trimmed. The whole exchange, connect included, is
// bounded by timeout, so nothing outlives a call.
func (h *testHost) get(url string, timeout time.Duration) (string, error) {
	addr := strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/")
	var conn net.Conn
	err := netns.Do(h.ns, func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		conn = c
		return err
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", addr); err != nil {
		return "", err
	}
	res, err := io.ReadAll(io.LimitReader(conn, 1<<16))
	if err != nil {
		return "", err
	}
	_, body, ok := strings.Cut(string(res), "\r\n\r\n")
	if !ok {
		return "", fmt.Errorf("no HTTP response: %q", res)
	}
	return strings.TrimSpace(body), nil
}

// command is skiff run inside host h.
func (h *testHost) command(t *testing.T, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + h.ns, skiffBinary(t)}, args...)...)
}

// testCluster is a skiff server on one test host and agents on others.
type testCluster struct {
	t      *testing.T
	net    *testNet
	server *testHost
	addr   string // the API's host:port
	config string // the admin's client config
	agents []*testAgent
}

type testAgent struct {
	host    *testHost
	name    string
	dataDir string
	state   string
	socket  string
	p       *proc
}

// startTestCluster runs `skiff server` on host "server" and `skiff agent`
// on each of agents, and waits until the nodes are Ready with pod CIDRs.
func startTestCluster(t *testing.T, tn *testNet, agents ...string) *testCluster {
	t.Helper()
	dir := t.TempDir()
	srv := tn.hosts["server"]
	c := &testCluster{t: t, net: tn, server: srv, addr: srv.ip + ":7443"}
	token := pki.NewToken()
	serverData := filepath.Join(dir, "server")
	c.config = adminConfigPath(serverData)
	out := &syncWriter{w: new(bytes.Buffer)}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster output:\n%s", out.String())
		}
	})
	startCmd(t, "server", out, srv.command(t, "server", "--data-dir", serverData, "--listen", c.addr, "--token", token,
		"--client-config", filepath.Join(dir, "client.config"), "--log-level", "warn"))
	waitAdminConfig(t, serverData, 60*time.Second)
	for _, name := range agents {
		h := tn.hosts[name]
		a := &testAgent{host: h, name: name, dataDir: filepath.Join(dir, name, "data"), state: filepath.Join(dir, name, "state"), socket: filepath.Join(dir, name, "cri.sock")}
		// The OCI containers outlive the agent by design; the test
		// deletes its pods, and should it fail first this removes what
		// runc still runs, then the namespace pins.
		t.Cleanup(func() {
			removeOCILeftovers(t, a.dataDir)
			unmountAll(t, a.state)
		})
		a.p = startCmd(t, name, out, h.command(t, "--server", c.addr, "--config", c.config, "agent", "--token", token,
			"--data-dir", a.dataDir, "--state-dir", a.state, "--cri-socket", a.socket, "--node-name", name,
			"--agent-listen", h.ip+":10250", "--log-level", "warn"))
		c.agents = append(c.agents, a)
	}
	var nodes string
	eventually(t, 60*time.Second, func() bool {
		nodes, _ = c.skiff("get", "nodes", "-o", "json")
		for _, a := range c.agents {
			n := c.node(a.name)
			if n.Status != "Ready" || n.PodCIDR == "" {
				return false
			}
		}
		return true
	}, func() string { return "the nodes are not all Ready with a pod CIDR:\n" + nodes })
	return c
}

// startCmd starts cmd as startProc starts skiff.
func startCmd(t *testing.T, name string, out *syncWriter, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	fmt.Fprintf(out, "--- %s: %s\n", name, strings.Join(cmd.Args, " "))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.kill)
	return p
}

// skiff runs the CLI inside the server's host, as the admin.
func (c *testCluster) skiff(args ...string) (string, error) {
	cmd := c.server.command(c.t, append([]string{"--server", c.addr, "--config", c.config}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *testCluster) mustSkiff(args ...string) string {
	c.t.Helper()
	out, err := c.skiff(args...)
	if err != nil {
		c.t.Fatalf("skiff %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

type nodeView struct {
	Status  string
	PodCIDR string
}

func (c *testCluster) node(name string) nodeView {
	out, err := c.skiff("get", "node", name, "-o", "json")
	if err != nil {
		return nodeView{}
	}
	var n struct {
		Spec struct {
			PodCIDR string `json:"podCIDR"`
		} `json:"spec"`
		Status struct {
			Conditions []struct{ Type, Status string } `json:"conditions"`
		} `json:"status"`
	}
	if json.Unmarshal([]byte(out), &n) != nil {
		return nodeView{}
	}
	v := nodeView{PodCIDR: n.Spec.PodCIDR}
	for _, cond := range n.Status.Conditions {
		if cond.Type == "Ready" && cond.Status == "True" {
			v.Status = "Ready"
		}
	}
	return v
}

type podNet struct {
	Phase, IP, Node string
}

func (c *testCluster) pod(name string) podNet {
	out, err := c.skiff("get", "pod", name, "-o", "json")
	if err != nil {
		return podNet{}
	}
	var p struct {
		Spec struct {
			NodeName string `json:"nodeName"`
		} `json:"spec"`
		Status struct {
			Phase string `json:"phase"`
			PodIP string `json:"podIP"`
		} `json:"status"`
	}
	if json.Unmarshal([]byte(out), &p) != nil {
		return podNet{}
	}
	return podNet{Phase: p.Status.Phase, IP: p.Status.PodIP, Node: p.Spec.NodeName}
}

func (c *testCluster) waitRunning(names ...string) map[string]podNet {
	c.t.Helper()
	got := map[string]podNet{}
	for _, name := range names {
		var p podNet
		eventually(c.t, 90*time.Second, func() bool { p = c.pod(name); return p.Phase == "Running" && p.IP != "" },
			func() string {
				d, _ := c.skiff("describe", "pod", name)
				return fmt.Sprintf("pod %s is %+v, want Running with an IP:\n%s", name, p, d)
			})
		got[name] = p
	}
	return got
}

// networkPods: two Wasm web servers (on n1 and n2) behind a NodePort
// service, a busybox httpd (OCI) on n2, and a busybox client (OCI) on n3,
// each placed on its node by name.
const networkPods = `apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - port: 80
    targetPort: http
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  labels: {app: web}
spec:
  nodeName: n1
  containers:
  - name: web
    image: server
    args: ["web-1"]
    ports:
    - {name: http, containerPort: 8080}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-2
  labels: {app: web}
spec:
  nodeName: n2
  containers:
  - name: web
    image: server
    args: ["web-2"]
    ports:
    - {name: http, containerPort: 8080}
---
apiVersion: v1
kind: Pod
metadata:
  name: httpd
spec:
  nodeName: n2
  containers:
  - name: httpd
    image: busybox
    command: ["sh", "-c", "mkdir -p /tmp/www && echo oci-page > /tmp/www/index.html && exec httpd -f -p 8081 -h /tmp/www"]
---
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  nodeName: n3
  containers:
  - name: client
    image: busybox
    command: ["sleep", "3600"]
`

// TestPodNetwork runs a server and three agents, each on a test host of
// its own, all joined by a bridge inside namespaces the test made (no
// route out of the machine; nothing is sent from the root namespace):
// pods on different nodes reach each other by pod IP, OCI and Wasm alike;
// a ClusterIP service spreads requests over pods on two nodes; its
// NodePort answers a fourth host outside the cluster; and a deleted pod
// leaves the rotation.
func TestPodNetwork(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root: test hosts are network namespaces, and nodes run CNI and iptables")
	}
	for _, tool := range []string{"runc", "iptables-restore", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (`go tool task deps` installs it)", tool)
		}
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		if _, err := os.Stat("/opt/cni/bin/bridge"); err != nil {
			t.Skip("needs the CNI plugins (Debian package containernetworking-plugins; `go tool task deps` installs it)")
		}
	}
	archive := filepath.Join(t.TempDir(), "busybox.tar")
	if err := os.WriteFile(archive, imagetest.DockerArchive(t, "busybox:latest", imagetest.BusyboxImage(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	server := buildWasm(t, "../../runtime/wasm/testdata/server")
	tn := newTestNet(t, "server", "n1", "n2", "n3", "outside")
	c := startTestCluster(t, tn, "n1", "n2", "n3")
	for _, a := range c.agents {
		c.mustSkiff("image", "import", "--data-dir", a.dataDir, "server", server)
		c.mustSkiff("image", "import", "--data-dir", a.dataDir, "busybox", archive)
	}
	t.Cleanup(func() {
		c.skiff("delete", "pod", "web-1", "web-2", "httpd", "client", "--grace-period", "0", "--force")
	})
	c.mustSkiff("apply", "-f", writeFile(t, "net.yaml", networkPods))
	pods := c.waitRunning("web-1", "web-2", "httpd", "client")

	// Each pod has an IP of its node's pod CIDR, and the CIDRs differ.
	cidrOf := map[string]string{} // node -> pod CIDR
	taken := map[string]bool{}
	for _, a := range c.agents {
		cidr := c.node(a.name).PodCIDR
		if taken[cidr] {
			t.Errorf("pod CIDR %s given to two nodes", cidr)
		}
		taken[cidr], cidrOf[a.name] = true, cidr
	}
	for name, p := range pods {
		_, ipnet, err := net.ParseCIDR(cidrOf[p.Node])
		if err != nil || !ipnet.Contains(net.ParseIP(p.IP)) {
			t.Errorf("pod %s on %s has IP %s, outside its node's pod CIDR %s", name, p.Node, p.IP, cidrOf[p.Node])
		}
	}

	// Across nodes by pod IP: the OCI client on n3 reaches the Wasm server
	// on n1 and the OCI httpd on n2.
	// (busybox-static's wget -T crashes: timeout bounds it instead.)
	fetch := func(url string) string {
		out, err := c.skiff("exec", "client", "--", "timeout", "5", "wget", "-q", "-O", "-", url)
		if err != nil {
			return fmt.Sprintf("%s(%v)", out, err)
		}
		return out
	}
	var got string
	eventually(t, 30*time.Second, func() bool { got = fetch("http://" + pods["web-1"].IP + ":8080/"); return got == "web-1 8080\n" },
		func() string { return "client on n3 fetching web-1 on n1 by pod IP got " + got + "\n" + tn.describe() })
	eventually(t, 30*time.Second, func() bool { got = fetch("http://" + pods["httpd"].IP + ":8081/"); return got == "oci-page\n" },
		func() string { return "client on n3 fetching httpd on n2 by pod IP got " + got + "\n" + tn.describe() })

	// The service: a cluster IP, a node port, both pods as endpoints.
	var svc struct {
		Spec struct {
			ClusterIP string `json:"clusterIP"`
			Ports     []struct {
				NodePort int `json:"nodePort"`
			} `json:"ports"`
		} `json:"spec"`
	}
	if err := json.Unmarshal([]byte(c.mustSkiff("get", "service", "web", "-o", "json")), &svc); err != nil || svc.Spec.ClusterIP == "" || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].NodePort == 0 {
		t.Fatalf("service web has no cluster IP or node port: %+v, %v", svc, err)
	}
	clusterIP, nodePort := svc.Spec.ClusterIP, svc.Spec.Ports[0].NodePort
	eventually(t, 30*time.Second, func() bool {
		eps := c.mustSkiff("get", "endpoints", "web")
		return strings.Contains(eps, pods["web-1"].IP+":8080") && strings.Contains(eps, pods["web-2"].IP+":8080")
	}, func() string { return "endpoints of web: " + c.mustSkiff("get", "endpoints", "web") })

	// The client sees the service in its environment (it started after
	// the service) and its requests to the cluster IP reach both pods.
	if env := c.mustSkiff("exec", "client", "--", "env"); !strings.Contains(env, "WEB_SERVICE_HOST="+clusterIP+"\n") || !strings.Contains(env, "WEB_SERVICE_PORT=80\n") {
		t.Errorf("the client's environment lacks WEB_SERVICE_HOST=%s and WEB_SERVICE_PORT=80:\n%s", clusterIP, env)
	}
	seen := map[string]int{}
	eventually(t, 30*time.Second, func() bool {
		out, _ := c.skiff("exec", "client", "--", "sh", "-c",
			"for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do timeout 5 wget -q -O - http://"+clusterIP+"/; done")
		for _, line := range strings.Split(out, "\n") {
			if line != "" {
				seen[line]++
			}
		}
		return seen["web-1 8080"] > 0 && seen["web-2 8080"] > 0
	}, func() string {
		return fmt.Sprintf("requests to the cluster IP %s reached %v, want both pods", clusterIP, seen)
	})

	// The node port answers a host outside the cluster, on every node,
	// spreading over both pods.
	outside := tn.hosts["outside"]
	for _, a := range c.agents {
		url := fmt.Sprintf("http://%s:%d/", a.host.ip, nodePort)
		seen := map[string]int{}
		eventually(t, 30*time.Second, func() bool {
			body, err := outside.get(url, 2*time.Second)
			if err == nil {
				seen[body]++
			}
			return seen["web-1 8080"] > 0 && seen["web-2 8080"] > 0
		}, func() string { return fmt.Sprintf("the node port at %s answered %v, want both pods", url, seen) })
	}

	// A deleted pod leaves the rotation: requests go on through the
	// node port, each bounded by 300ms, until 40 in a row reach web-1; the
	// time from the delete to the last one that did not is how long web-2
	// stayed in the rotation.
	url := fmt.Sprintf("http://%s:%d/", c.agents[0].host.ip, nodePort)
	start := time.Now()
	c.mustSkiff("delete", "pod", "web-2", "--wait=false")
	var lastOther time.Time
	var answers []string
	good := 0
	eventually(t, 20*time.Second, func() bool {
		sent := time.Now()
		body, err := outside.get(url, 300*time.Millisecond)
		if err != nil {
			body = err.Error()
		}
		if body == "web-1 8080" {
			good++
		} else {
			good, lastOther = 0, sent
			answers = append(answers, body)
		}
		return good >= 40
	}, func() string {
		return fmt.Sprintf("after web-2 was deleted the node port still answers otherwise than web-1: %q", answers)
	})
	left := time.Duration(0)
	if !lastOther.IsZero() {
		left = lastOther.Sub(start)
	}
	t.Logf("web-2 left the rotation within %v of its deletion (the answers otherwise than web-1: %q)", left.Round(10*time.Millisecond), answers)
	if left > 2*time.Second {
		t.Errorf("web-2 stayed in the rotation %v after its deletion, want at most 2s", left)
	}

	c.mustSkiff("delete", "pod", "web-1", "httpd", "client", "--grace-period", "0", "--force")
	c.mustSkiff("delete", "service", "web")
	for _, a := range c.agents {
		eventually(t, 60*time.Second, func() bool {
			sbs, _ := criSandboxes(t, a.socket)
			return len(sbs) == 0
		}, func() string { return "sandboxes left on " + a.name })
	}
	for _, a := range c.agents {
		if err := a.p.stop(); err != nil {
			t.Errorf("agent %s stopped with %v, want exit status 0", a.name, err)
		}
	}
}
