package cri

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/netns"
	"skiff.dev/skiff/netns/netnstest"
	"skiff.dev/skiff/runtime/image"
	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

const testPodCIDR = "10.97.0.0/24"

// cniEnv is an env whose pods are networked by skiff's own CNI network,
// its plugins running in a host namespace of the test's.
type cniEnv struct {
	*env
	host, state string // the plugins' namespace; the CNI state dir
}

func newCNIEnv(tb testing.TB) *cniEnv {
	tb.Helper()
	netnstest.NeedCNI(tb)
	host := netnstest.HostNamespace(tb)
	state := tb.TempDir()
	root := tb.TempDir()
	images, err := image.Open(filepath.Join(root, "images"))
	if err != nil {
		tb.Fatal(err)
	}
	e := &env{t: tb, root: root, logDir: filepath.Join(root, "logs"), images: images,
		ns: hostNamespaces{dir: filepath.Join(root, "state", "netns")}}
	ce := &cniEnv{env: e, host: host, state: state}
	e.network = ce.newNetwork()
	// Registered before the env's stop, so it runs after it: whatever a
	// failed test left, the pins go (the host namespace goes with its own
	// cleanup, taking bridge, veths and rules with it).
	tb.Cleanup(func() {
		pins, _ := netns.List(e.ns.(hostNamespaces).dir)
		for _, p := range pins {
			netns.Delete(p)
		}
	})
	e.open()
	tb.Cleanup(func() { e.stop() })
	return ce
}

// newNetwork is a CNI network on the env's state, as a node process makes
// one at start: it knows no pod CIDR yet.
func (e *cniEnv) newNetwork() *netns.CNI {
	n, err := netns.NewCNI(netns.CNIConfig{StateDir: e.state, HostNSPath: e.host})
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *cniEnv) setPodCIDR(cidr string) error {
	_, err := e.rs.UpdateRuntimeConfig(context.Background(), &runtime.UpdateRuntimeConfigRequest{
		RuntimeConfig: &runtime.RuntimeConfig{NetworkConfig: &runtime.NetworkConfig{PodCidr: cidr}},
	})
	return err
}

func (e *cniEnv) networkReady() (bool, string) {
	e.t.Helper()
	st, err := e.rs.Status(context.Background(), &runtime.StatusRequest{})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, c := range st.GetStatus().GetConditions() {
		if c.Type == runtime.NetworkReady {
			return c.Status, c.Message
		}
	}
	e.t.Fatal("Status has no NetworkReady condition")
	return false, ""
}

func (e *cniEnv) podIPs(id string) []string {
	e.t.Helper()
	st, err := e.rs.PodSandboxStatus(context.Background(), &runtime.PodSandboxStatusRequest{PodSandboxId: id})
	if err != nil {
		e.t.Fatal(err)
	}
	ips := []string{st.GetStatus().GetNetwork().GetIp()}
	for _, ip := range st.GetStatus().GetNetwork().GetAdditionalIps() {
		ips = append(ips, ip.GetIp())
	}
	return ips
}

func (e *cniEnv) removePod(id string) {
	e.t.Helper()
	ctx := context.Background()
	if _, err := e.rs.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.rs.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		e.t.Fatal(err)
	}
}

// settled waits until snapshot gives before again: the kernel takes a
// bridge's carrier (flag running) down a moment after its last port goes.
func settled(t *testing.T, before string, snapshot func() string) {
	t.Helper()
	var after string
	wasmtest.Eventually(t, 5*time.Second, func() bool { after = snapshot(); return after == before },
		func() string { return "the node differs from before:\n" + netnstest.Diff(before, after) })
}

// cniID is the ID the pod network knows sandbox id by.
func (e *cniEnv) cniID(id string) string {
	e.t.Helper()
	sb, err := e.svc.getSandbox(id)
	if err != nil {
		e.t.Fatal(err)
	}
	rec := sb.snapshot()
	return rec.cniID()
}

// files lists the files under dir, relative, sorted; host-local's
// last_reserved_ip.* (which moves on with every pod) by name only.
func files(t testing.TB, dir string) []string {
	t.Helper()
	var names []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			names = append(names, rel)
		}
		return nil
	})
	sort.Strings(names)
	return names
}

// TestCNIPodNetwork: through CRI, a node without a pod CIDR reports its
// network not ready and refuses pods with the reason; once the agent
// gives it one (UpdateRuntimeConfig), two pods get distinct IPs in it,
// shown by PodSandboxStatus, and reach each other; after a restart the
// pods keep their IPs, and StopPodSandbox frees them.
func TestCNIPodNetwork(t *testing.T) {
	e := newCNIEnv(t)
	ctx := context.Background()
	pinDir := e.ns.(hostNamespaces).dir

	if ok, msg := e.networkReady(); ok || msg != "no pod CIDR yet" {
		t.Errorf("NetworkReady before a pod CIDR = %v, %q; want false, \"no pod CIDR yet\"", ok, msg)
	}
	_, err := e.rs.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: podConfig("early", "")})
	wantCode(t, err, codes.FailedPrecondition, "pod network not ready: no pod CIDR yet")
	if pins, _ := netns.List(pinDir); len(pins) != 0 {
		t.Errorf("a refused pod left pins %v", pins)
	}
	wantCode(t, e.setPodCIDR("10.97.0.0/33"), codes.InvalidArgument, "pod_cidr", "10.97.0.0/33")
	if err := e.setPodCIDR(testPodCIDR); err != nil {
		t.Fatal(err)
	}
	if ok, msg := e.networkReady(); !ok {
		t.Fatalf("NetworkReady with a pod CIDR = false, %q", msg)
	}

	a, b := e.runPod("a"), e.runPod("b")
	ipA, ipB := e.podIPs(a), e.podIPs(b)
	_, cidr, _ := net.ParseCIDR(testPodCIDR)
	for _, ips := range [][]string{ipA, ipB} {
		if len(ips) != 1 || !cidr.Contains(net.ParseIP(ips[0])) {
			t.Fatalf("pod IPs %v; want one in %s", ips, testPodCIDR)
		}
	}
	if ipA[0] == ipB[0] {
		t.Fatalf("both pods have %s", ipA[0])
	}

	// b serves in its namespace; a dials b's pod IP from its own.
	f, err := netns.ListenTCP(filepath.Join(pinDir, b), 8080)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte(c.RemoteAddr().(*net.TCPAddr).IP.String()))
			c.Close()
		}
	}()
	var seen string
	err = netns.Do(filepath.Join(pinDir, a), func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ipB[0], "8080"), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		seen = string(buf[:n])
		return nil
	})
	if err != nil || seen != ipA[0] {
		t.Fatalf("pod a dialling pod b at %s:8080: b saw %q, %v; want a's IP %s", ipB[0], seen, err, ipA[0])
	}

	// A restart: the new process's network has no pod CIDR yet.
	e.network = e.newNetwork()
	e.restart()
	if got := e.podIPs(a); !slices.Equal(got, ipA) {
		t.Errorf("pod a's IPs after a restart %v; want %v", got, ipA)
	}
	if _, err := e.rs.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: a}); err != nil {
		t.Fatal(err)
	}
	if got := files(t, filepath.Join(e.state, "ipam")); slices.Contains(got, filepath.Join("skiff", ipA[0])) {
		t.Errorf("pod a's address still reserved after StopPodSandbox: %v", got)
	}
	if nat := netnstest.IPTables(t, e.host, "nat"); strings.Contains(nat, ipA[0]) {
		t.Errorf("pod a's masquerade rule left after StopPodSandbox:\n%s", nat)
	}
	e.removePod(a)
	e.removePod(b)
	if got := files(t, filepath.Join(e.state, "ipam")); slices.ContainsFunc(got, func(f string) bool { return net.ParseIP(filepath.Base(f)) != nil }) {
		t.Errorf("addresses still reserved after both pods went: %v", got)
	}
}

// TestCNITeardown: 200 pod sandboxes run and removed through CRI, some
// with namespaces attached ahead (netns.CNIPool), some attached inline
// when the pool ran dry, leave the node as they found it once the service
// is closed (and its spares torn down): the host namespace's links,
// addresses, routes and iptables rules (nat, filter), the namespace pins,
// host-local's files and libcni's cache. The snapshot is taken after one
// warm-up pod, so the bridge (which stays, as with containerd) is in both.
func TestCNITeardown(t *testing.T) {
	if testing.Short() {
		t.Skip("200 pods take half a minute; not with -short")
	}
	e := newCNIEnv(t)
	if err := e.setPodCIDR(testPodCIDR); err != nil {
		t.Fatal(err)
	}
	pinDir := e.ns.(hostNamespaces).dir
	snapshot := func() string {
		return strings.Join([]string{
			netnstest.Snapshot(t, e.host),
			"pins: " + strings.Join(files(t, pinDir), " "),
			"state: " + strings.Join(files(t, e.state), " "),
		}, "\n")
	}
	e.removePod(e.runPod("warm-up"))
	e.stop()
	before := snapshot()
	if !strings.Contains(before, netns.DefaultCNIBridge) {
		t.Fatalf("no bridge in the host namespace after the warm-up pod:\n%s", before)
	}
	e.open()
	const pods = 200
	pooled := 0
	for i := range pods {
		id := e.runPod("p" + strings.Repeat("x", i%3) + string(rune('a'+i%26)))
		if i == pods/2 {
			if ips := e.podIPs(id); ips[0] == "" {
				t.Fatal("a pod without an IP")
			}
		}
		if e.cniID(id) != id {
			pooled++
		}
		e.removePod(id)
	}
	t.Logf("%d of %d pods had a namespace attached ahead", pooled, pods)
	if pooled == 0 {
		t.Error("no pod had a namespace attached ahead")
	}
	e.stop()
	settled(t, before, snapshot)
}

// BenchmarkPodNetworkSetup: RunPodSandbox through the CRI socket with
// skiff's CNI network (bridge, host-local, portmap) and, for contrast, with
// loopback only. Stop and remove are not timed.
//
//	cni:          CNI ADD inline, on the sandbox's path (no pool).
//	cni-pool:     namespaces attached ahead (netns.CNIPool), the pool
//	              refilled between pods (untimed): pods coming slower than
//	              the pool refills.
//	cni-pool-run: the same without waiting: pods back to back, each
//	              taking a spare when the refill has kept up.
//	loopback:     no CNI.
//
// Reports the median (p50-ms) besides the mean, and for the pool the
// share of pods that had a spare (pooled-%).
func BenchmarkPodNetworkSetup(b *testing.B) {
	for _, mode := range []string{"cni", "cni-pool", "cni-pool-run", "loopback"} {
		b.Run(mode, func(b *testing.B) {
			e := newCNIEnv(b)
			switch mode {
			case "loopback":
				e.stop()
				e.network = netns.Loopback{}
				e.open()
			case "cni":
				e.stop()
				e.inline = true
				e.open()
			}
			if mode != "loopback" {
				if err := e.setPodCIDR(testPodCIDR); err != nil {
					b.Fatal(err)
				}
			}
			refill := func() {
				if e.attached != nil {
					wasmtest.Eventually(b, 10*time.Second, func() bool { return e.attached.Spares() == namespacePoolSize },
						func() string { return "the pool was not refilled" })
				}
			}
			refill()
			e.removePod(e.runPod("warm-up"))
			refill()
			var d []time.Duration
			pooled := 0
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				start := time.Now()
				resp, err := e.rs.RunPodSandbox(context.Background(), &runtime.RunPodSandboxRequest{Config: podConfig("bench", "")})
				d = append(d, time.Since(start))
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if id := resp.PodSandboxId; e.cniID(id) != id {
					pooled++
				}
				e.removePod(resp.PodSandboxId)
				if mode == "cni-pool" {
					refill()
				}
				b.StartTimer()
			}
			slices.Sort(d)
			b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, "p50-ms")
			if e.attached != nil {
				b.ReportMetric(float64(100*pooled)/float64(len(d)), "pooled-%")
			}
		})
	}
}

// TestCNIAttachedPool: with skiff's own network, sandboxes take namespaces
// attached ahead (netns.CNIPool): their IPs, as PodSandboxStatus shows
// them, work (one pod reaches another, which sees the caller's IP); after
// a restart, StopPodSandbox frees a pod's address and rules under the
// spare's ID it was attached with; a namespace taken by a process that
// died before recording its sandbox is torn down at the next start under
// that ID too; and once the service is closed, the host namespace, the
// pins and the CNI state are as they were before any pod.
func TestCNIAttachedPool(t *testing.T) {
	e := newCNIEnv(t)
	ctx := context.Background()
	pinDir := e.ns.(hostNamespaces).dir
	if err := e.setPodCIDR(testPodCIDR); err != nil {
		t.Fatal(err)
	}
	full := func() {
		t.Helper()
		wasmtest.Eventually(t, 10*time.Second, func() bool { return e.attached.Spares() == namespacePoolSize },
			func() string {
				return fmt.Sprintf("the pool holds %d spares; want %d", e.attached.Spares(), namespacePoolSize)
			})
	}
	full()
	snapshot := func() string {
		return strings.Join([]string{
			netnstest.Snapshot(t, e.host),
			"pins: " + strings.Join(files(t, pinDir), " "),
			"state: " + strings.Join(files(t, e.state), " "),
		}, "\n")
	}
	e.stop()
	before := snapshot()
	if !strings.Contains(before, netns.DefaultCNIBridge) {
		t.Fatalf("no bridge in the host namespace after the spares were made:\n%s", before)
	}
	e.open() // the network keeps its pod CIDR: spares are made at once
	full()

	a, b := e.runPod("a"), e.runPod("b")
	for _, id := range []string{a, b} {
		if c := e.cniID(id); !strings.HasPrefix(c, "spare-") {
			t.Fatalf("sandbox %s is known to the network as %q; want a spare's ID", id, c)
		}
	}
	ipA, ipB := e.podIPs(a), e.podIPs(b)
	_, cidr, _ := net.ParseCIDR(testPodCIDR)
	for _, ips := range [][]string{ipA, ipB} {
		if len(ips) != 1 || !cidr.Contains(net.ParseIP(ips[0])) {
			t.Fatalf("pod IPs %v; want one in %s", ips, testPodCIDR)
		}
	}
	if ipA[0] == ipB[0] {
		t.Fatalf("both pods have %s", ipA[0])
	}
	f, err := netns.ListenTCP(filepath.Join(pinDir, b), 8080)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte(c.RemoteAddr().(*net.TCPAddr).IP.String()))
			c.Close()
		}
	}()
	var seen string
	err = netns.Do(filepath.Join(pinDir, a), func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ipB[0], "8080"), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		seen = string(buf[:n])
		return nil
	})
	if err != nil || seen != ipA[0] {
		t.Fatalf("pod a dialling pod b at %s:8080: b saw %q, %v; want a's IP %s", ipB[0], seen, err, ipA[0])
	}

	// A process that dies between taking a namespace and recording its
	// sandbox leaves a pin with no record and the spare's ID in a claim.
	full()
	orphan, ok, err := e.attached.Take("crashed")
	if err != nil || !ok {
		t.Fatalf("Take = %v, %v", ok, err)
	}
	if !slices.Contains(files(t, filepath.Join(e.state, "ipam")), filepath.Join("skiff", orphan.Result.IPs[0])) {
		t.Fatalf("the orphan's address %s is not reserved", orphan.Result.IPs[0])
	}

	// A restart: the new process's network has no pod CIDR yet.
	e.network = e.newNetwork()
	e.restart()
	if ok, _ := netns.IsPinned(orphan.Path); ok {
		t.Error("the orphaned namespace is still pinned after a restart")
	}
	reserved := files(t, filepath.Join(e.state, "ipam"))
	if slices.Contains(reserved, filepath.Join("skiff", orphan.Result.IPs[0])) {
		t.Errorf("the orphan's address %s still reserved after a restart: %v", orphan.Result.IPs[0], reserved)
	}
	if got := e.podIPs(a); !slices.Equal(got, ipA) {
		t.Errorf("pod a's IPs after a restart %v; want %v", got, ipA)
	}
	if got, want := e.attached.Claimed(a), e.cniID(a); got != want {
		t.Errorf("claim on pod a's namespace after a restart = %q; want %q", got, want)
	}
	if _, err := e.rs.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: a}); err != nil {
		t.Fatal(err)
	}
	if got := files(t, filepath.Join(e.state, "ipam")); slices.Contains(got, filepath.Join("skiff", ipA[0])) {
		t.Errorf("pod a's address still reserved after StopPodSandbox: %v", got)
	}
	if nat := netnstest.IPTables(t, e.host, "nat"); strings.Contains(nat, ipA[0]) {
		t.Errorf("pod a's masquerade rule left after StopPodSandbox:\n%s", nat)
	}
	if got := e.attached.Claimed(a); got != "" {
		t.Errorf("claim on pod a's namespace after StopPodSandbox = %q; want none", got)
	}
	e.removePod(a)
	e.removePod(b)
	e.stop()
	settled(t, before, snapshot)
}

// TestCNIServerPool: a Server on skiff's own CNI network keeps namespaces
// attached ahead once it has a pod CIDR, gives a sandbox one, and Close
// tears the spares down: no spare pin, address reservation or veth stays.
func TestCNIServerPool(t *testing.T) {
	netnstest.NeedCNI(t)
	host := netnstest.HostNamespace(t)
	cniState, stateDir, root := t.TempDir(), t.TempDir(), t.TempDir()
	network, err := netns.NewCNI(netns.CNIConfig{StateDir: cniState, HostNSPath: host})
	if err != nil {
		t.Fatal(err)
	}
	images, err := image.Open(filepath.Join(root, "images"))
	if err != nil {
		t.Fatal(err)
	}
	pinDir := filepath.Join(stateDir, "netns")
	t.Cleanup(func() {
		pins, _ := netns.List(pinDir)
		spares, _ := netns.List(filepath.Join(pinDir, ".prenet"))
		for _, p := range append(pins, spares...) {
			netns.Delete(p)
		}
	})
	srv, err := New(context.Background(), Config{Socket: filepath.Join(root, "cri.sock"), RootDir: filepath.Join(root, "node"), StateDir: stateDir, Images: images, Runtimes: testRuntimes(t), Network: network})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	ctx := context.Background()
	_, err = srv.svc.UpdateRuntimeConfig(ctx, &runtime.UpdateRuntimeConfigRequest{
		RuntimeConfig: &runtime.RuntimeConfig{NetworkConfig: &runtime.NetworkConfig{PodCidr: testPodCIDR}},
	})
	if err != nil {
		t.Fatal(err)
	}
	wasmtest.Eventually(t, 10*time.Second, func() bool { return srv.attached.Spares() == namespacePoolSize },
		func() string {
			return fmt.Sprintf("the server's pool holds %d spares; want %d", srv.attached.Spares(), namespacePoolSize)
		})
	resp, err := srv.svc.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: podConfig("a", "")})
	if err != nil {
		t.Fatal(err)
	}
	st, err := srv.svc.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: resp.PodSandboxId})
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := srv.svc.getSandbox(resp.PodSandboxId)
	if rec := sb.snapshot(); !strings.HasPrefix(rec.CNIID, "spare-") || st.GetStatus().GetNetwork().GetIp() != rec.IPs[0] {
		t.Errorf("sandbox known to the network as %q with IP %q; want a spare's ID and its IP %v", rec.CNIID, st.GetStatus().GetNetwork().GetIp(), rec.IPs)
	}
	if _, err := srv.svc.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: resp.PodSandboxId}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if left, _ := netns.List(filepath.Join(pinDir, ".prenet")); len(left) != 0 {
		t.Errorf("spare pins after Close: %v", left)
	}
	if got := files(t, filepath.Join(cniState, "ipam")); slices.ContainsFunc(got, func(f string) bool { return net.ParseIP(filepath.Base(f)) != nil }) {
		t.Errorf("addresses still reserved after Close: %v", got)
	}
	if links := netnstest.Snapshot(t, host); strings.Contains(links, "veth") {
		t.Errorf("veths left in the host namespace after Close:\n%s", links)
	}
}
