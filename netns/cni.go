package netns

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// ErrNotReady: the pod network cannot attach pods yet (no pod CIDR and no
// conflist of the user's). Callers map it to FailedPrecondition.
var ErrNotReady = errors.New("pod network not ready")

// Defaults of a CNI network.
var DefaultCNIBinDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

const (
	// DefaultCNINetwork is the name of the network skiff writes for itself.
	DefaultCNINetwork = "skiff"
	// DefaultCNIBridge is the bridge of that network on the node.
	DefaultCNIBridge = "skiff0"
	// DefaultCNITimeout bounds one CNI ADD or DEL (the whole plugin chain).
	DefaultCNITimeout = time.Minute
	// cniIfName is the pod's interface.
	cniIfName = "eth0"
	// cniVersion of the conflist skiff writes: the newest that Debian 12's
	// containernetworking-plugins (1.1.1) speak.
	cniVersion = "1.0.0"
)

// CNIConfig configures a CNI network.
type CNIConfig struct {
	// ConfDir is the user's network configuration directory (as
	// /etc/cni/net.d): the first *.conflist in it, in lexical order, is
	// the pod network, read again at each Setup. Empty, or a directory
	// without one: skiff's own network from the pod CIDR (SetPodCIDR).
	ConfDir string
	// BinDirs are searched for plugin binaries, in order. Nil:
	// DefaultCNIBinDirs.
	BinDirs []string
	// StateDir holds what must not outlive a reboot, as the namespace pins:
	// libcni's cache of results (cache/), host-local's reservations
	// (ipam/) and the conflist skiff writes (skiff.conflist). Required.
	StateDir string
	// HostNSPath is the network namespace the plugins run in: where the
	// bridge, the host ends of the veths, routes and iptables rules go.
	// Empty: the caller's (the node's, in production). Tests name a
	// namespace of their own, so that nothing lands in the root one.
	HostNSPath string
	// Timeout bounds one ADD or DEL. 0: DefaultCNITimeout.
	Timeout time.Duration
}

// CNI is a Network that attaches pods through CNI plugins (libcni). Safe
// for concurrent use.
type CNI struct {
	cfg CNIConfig
	lib *libcni.CNIConfig

	mu       sync.Mutex
	podCIDRs string          // as given to SetPodCIDR, canonical; "" until then
	ownConf  []byte          // skiff's conflist for podCIDRs; nil until then
	changed  []chan struct{} // told (without blocking) when podCIDRs changes
}

// NewCNI returns a CNI network. It does not need the plugins to be there
// yet: Ready says when they are missing.
func NewCNI(cfg CNIConfig) (*CNI, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("new CNI network: StateDir is required")
	}
	if cfg.BinDirs == nil {
		cfg.BinDirs = DefaultCNIBinDirs
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultCNITimeout
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("new CNI network: %w", err)
	}
	// An exec of our own: libcni makes its default lazily, on the first
	// call, which races when two calls are the first at once (a pod's
	// ADD and a spare's, CNIPool).
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	lib := libcni.NewCNIConfigWithCacheDir(cfg.BinDirs, filepath.Join(cfg.StateDir, "cache"), exec)
	return &CNI{cfg: cfg, lib: lib}, nil
}

// HavePlugins reports whether the plugins of skiff's own network (bridge,
// host-local, portmap) are in one of dirs (DefaultCNIBinDirs when nil).
func HavePlugins(dirs []string) bool {
	if dirs == nil {
		dirs = DefaultCNIBinDirs
	}
	for _, p := range []string{"bridge", "host-local", "portmap"} {
		if _, err := invoke.FindInPath(p, dirs); err != nil {
			return false
		}
	}
	return true
}

// SetPodCIDR gives skiff's own network the node's pod CIDR: one CIDR, or
// an IPv4 and an IPv6 one separated by a comma (as the kubelet passes
// them). It writes StateDir/skiff.conflist. Empty is ignored. A user's
// conflist in ConfDir, when there is one, is used instead.
func (c *CNI) SetPodCIDR(cidrs string) error {
	if strings.TrimSpace(cidrs) == "" {
		return nil
	}
	var v4, v6 []string
	for _, s := range strings.Split(cidrs, ",") {
		s = strings.TrimSpace(s)
		ip, ipnet, err := net.ParseCIDR(s)
		if err != nil {
			return fmt.Errorf("pod CIDR %q: %q is not a CIDR (as 10.244.1.0/24)", cidrs, s)
		}
		if ones, bits := ipnet.Mask.Size(); bits-ones < 2 {
			return fmt.Errorf("pod CIDR %q: %s leaves no address for pods", cidrs, s)
		}
		if !ip.Equal(ipnet.IP) {
			return fmt.Errorf("pod CIDR %q: %s has host bits set (the network is %s)", cidrs, s, ipnet)
		}
		if ip.To4() != nil {
			v4 = append(v4, ipnet.String())
		} else {
			v6 = append(v6, ipnet.String())
		}
	}
	if len(v4) > 1 || len(v6) > 1 {
		return fmt.Errorf("pod CIDR %q: at most one IPv4 and one IPv6 CIDR", cidrs)
	}
	canonical := strings.Join(append(v4, v6...), ",")
	conf, err := c.ownConfList(append(v4, v6...))
	if err != nil {
		return fmt.Errorf("pod CIDR %q: %w", cidrs, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if canonical == c.podCIDRs {
		return nil
	}
	if err := writeFileAtomic(filepath.Join(c.cfg.StateDir, "skiff.conflist"), conf); err != nil {
		return fmt.Errorf("pod CIDR %q: %w", cidrs, err)
	}
	c.podCIDRs, c.ownConf = canonical, conf
	for _, ch := range c.changed {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	return nil
}

// watch returns a channel that receives (without the sender blocking) when
// the pod CIDR changes.
func (c *CNI) watch() chan struct{} {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	c.changed = append(c.changed, ch)
	c.mu.Unlock()
	return ch
}

// unwatch stops telling ch.
func (c *CNI) unwatch(ch chan struct{}) {
	c.mu.Lock()
	c.changed = slices.DeleteFunc(c.changed, func(x chan struct{}) bool { return x == ch })
	c.mu.Unlock()
}

// own is skiff's own network, when it is the one pods are attached to
// now (no user's conflist), with its plugins found, and the pod CIDRs it
// was written for; "" when pods go on a user's network or none.
func (c *CNI) own() (*libcni.NetworkConfigList, string) {
	if c.cfg.ConfDir != "" {
		files, err := libcni.ConfFiles(c.cfg.ConfDir, []string{".conflist"})
		if err != nil || len(files) > 0 {
			return nil, ""
		}
	}
	c.mu.Lock()
	conf, key := c.ownConf, c.podCIDRs
	c.mu.Unlock()
	if conf == nil {
		return nil, ""
	}
	list, err := libcni.ConfListFromBytes(conf)
	if err != nil {
		return nil, ""
	}
	for _, p := range list.Plugins {
		if _, err := invoke.FindInPath(p.Network.Type, c.cfg.BinDirs); err != nil {
			return nil, ""
		}
	}
	return list, key
}

// ownKey is own's pod CIDRs, without parsing the conflist: "" when pods
// do not go on skiff's own network now.
func (c *CNI) ownKey() string {
	if c.cfg.ConfDir != "" {
		files, err := libcni.ConfFiles(c.cfg.ConfDir, []string{".conflist"})
		if err != nil || len(files) > 0 {
			return ""
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.podCIDRs
}

// ownConfList is skiff's network: a bridge (the pods' gateway, with
// masquerade and hairpin), host-local addresses from the CIDRs, and
// portmap for host ports.
func (c *CNI) ownConfList(cidrs []string) ([]byte, error) {
	type m = map[string]any
	var ranges []any
	var routes []any
	for _, cidr := range cidrs {
		ranges = append(ranges, []any{m{"subnet": cidr}})
		dst := "0.0.0.0/0"
		if !strings.Contains(cidr, ".") {
			dst = "::/0"
		}
		routes = append(routes, m{"dst": dst})
	}
	return json.MarshalIndent(m{
		"cniVersion": cniVersion,
		"name":       DefaultCNINetwork,
		"plugins": []any{
			m{
				"type": "bridge", "bridge": DefaultCNIBridge,
				"isGateway": true, "ipMasq": true, "hairpinMode": true,
				"ipam": m{
					"type":    "host-local",
					"dataDir": filepath.Join(c.cfg.StateDir, "ipam"),
					"ranges":  ranges,
					"routes":  routes,
				},
			},
			m{"type": "portmap", "capabilities": m{"portMappings": true}},
		},
	}, "", "  ")
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// conf is the network pods are attached to now, with every plugin it
// names found; an error says why there is none.
func (c *CNI) conf() (*libcni.NetworkConfigList, error) {
	list, source, err := c.load()
	if err != nil {
		return nil, err
	}
	for i, p := range list.Plugins {
		if _, err := invoke.FindInPath(p.Network.Type, c.cfg.BinDirs); err != nil {
			return nil, fmt.Errorf("CNI config %s: plugins[%d].type: plugin %q not found in %s", source, i, p.Network.Type, strings.Join(c.cfg.BinDirs, ", "))
		}
	}
	return list, nil
}

// load reads the user's conflist or, failing that, skiff's own.
func (c *CNI) load() (*libcni.NetworkConfigList, string, error) {
	if c.cfg.ConfDir != "" {
		files, err := libcni.ConfFiles(c.cfg.ConfDir, []string{".conflist"})
		if err != nil {
			return nil, c.cfg.ConfDir, fmt.Errorf("read CNI config dir %s: %w", c.cfg.ConfDir, err)
		}
		if len(files) > 0 {
			slices.Sort(files)
			list, err := libcni.ConfListFromFile(files[0])
			if err != nil {
				return nil, files[0], fmt.Errorf("CNI config %s: %w", files[0], err)
			}
			if len(list.Plugins) == 0 {
				return nil, files[0], fmt.Errorf("CNI config %s: plugins: empty", files[0])
			}
			return list, files[0], nil
		}
	}
	c.mu.Lock()
	conf := c.ownConf
	c.mu.Unlock()
	if conf == nil {
		reason := "no pod CIDR yet"
		if c.cfg.ConfDir != "" {
			reason += " and no *.conflist in " + c.cfg.ConfDir
		}
		return nil, "", fmt.Errorf("%w: %s", ErrNotReady, reason)
	}
	list, err := libcni.ConfListFromBytes(conf)
	if err != nil {
		return nil, "", fmt.Errorf("skiff's own CNI config: %w", err)
	}
	return list, filepath.Join(c.cfg.StateDir, "skiff.conflist"), nil
}

// Ready reports whether Setup can attach a pod: a network configured and
// its plugins installed.
func (c *CNI) Ready() (bool, string) {
	if _, err := c.conf(); err != nil {
		return false, strings.TrimPrefix(err.Error(), ErrNotReady.Error()+": ")
	}
	return true, ""
}

func (c *CNI) runtimeConf(podID, nsPath string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: podID, NetNS: nsPath, IfName: cniIfName}
}

// inHost runs fn in HostNSPath, when set. The plugins libcni starts are
// children of the calling thread, so they start in its namespace.
func (c *CNI) inHost(fn func() error) error {
	if c.cfg.HostNSPath == "" {
		return fn()
	}
	return Do(c.cfg.HostNSPath, fn)
}

// Setup runs the network's ADD for the pod and returns its addresses,
// IPv4 first. On error the plugins that ran are undone (DEL).
func (c *CNI) Setup(ctx context.Context, podID, nsPath string) (Result, error) {
	list, err := c.conf()
	if err != nil {
		return Result{}, err
	}
	return c.setup(ctx, list, podID, nsPath)
}

// setup runs list's ADD for podID; on error it is undone.
func (c *CNI) setup(ctx context.Context, list *libcni.NetworkConfigList, podID, nsPath string) (Result, error) {
	rt := c.runtimeConf(podID, nsPath)
	addCtx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var res types.Result
	err := c.inHost(func() error {
		var err error
		res, err = c.lib.AddNetworkList(addCtx, list, rt)
		return err
	})
	var ips []string
	if err == nil {
		ips, err = resultIPs(res)
	}
	if err != nil {
		err = fmt.Errorf("CNI ADD, network %q: %w", list.Name, err)
		if derr := c.del(context.WithoutCancel(ctx), list, rt); derr != nil {
			err = errors.Join(err, fmt.Errorf("undo: %w", derr))
		}
		return Result{}, err
	}
	return Result{IPs: ips}, nil
}

// resultIPs are a result's addresses, IPv4 first; none is an error.
func resultIPs(res types.Result) ([]string, error) {
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("read result: %w", err)
	}
	var v4, v6 []string
	for _, ip := range r.IPs {
		if ip.Address.IP.To4() != nil {
			v4 = append(v4, ip.Address.IP.String())
		} else {
			v6 = append(v6, ip.Address.IP.String())
		}
	}
	if len(v4)+len(v6) == 0 {
		return nil, errors.New("the plugins gave the pod no IP address")
	}
	return append(v4, v6...), nil
}

// Teardown runs DEL for the pod with the config its ADD used (libcni's
// cache), so that a pod set up before a restart or a change of config is
// torn down as it was made; without a cache entry, with the current
// config. It is idempotent: a pod already torn down, or never set up,
// succeeds.
func (c *CNI) Teardown(ctx context.Context, podID, nsPath string) error {
	rt := c.runtimeConf(podID, nsPath)
	list, err := c.cached(rt)
	if err != nil {
		return err
	}
	if list == nil {
		// No cache entry: never set up, already torn down, or an ADD that
		// failed (and was undone). DEL with the current config when there
		// is a usable one, in case that undo failed; without one, there
		// is nothing this network could have made.
		if list, err = c.conf(); err != nil {
			return nil
		}
	}
	if err := c.del(ctx, list, rt); err != nil {
		return fmt.Errorf("CNI DEL, network %q: %w", list.Name, err)
	}
	return nil
}

// cached is the config the pod's last ADD used, nil when there is none.
func (c *CNI) cached(rt *libcni.RuntimeConf) (*libcni.NetworkConfigList, error) {
	names := []string{DefaultCNINetwork}
	if list, _, err := c.load(); err == nil && list.Name != DefaultCNINetwork {
		names = append([]string{list.Name}, names...)
	}
	for _, name := range names {
		conf, _, err := c.lib.GetNetworkListCachedConfig(&libcni.NetworkConfigList{Name: name}, rt)
		if err != nil {
			return nil, err
		}
		if conf == nil {
			continue
		}
		list, err := libcni.ConfListFromBytes(conf)
		if err != nil {
			return nil, fmt.Errorf("cached CNI config of network %q: %w", name, err)
		}
		return list, nil
	}
	return nil, nil
}

func (c *CNI) del(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	return c.inHost(func() error { return c.lib.DelNetworkList(ctx, list, rt) })
}
