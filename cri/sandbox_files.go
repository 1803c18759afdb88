package cri

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffrt "skiff.dev/skiff/runtime"
)

// A sandbox's /etc/hosts, /etc/resolv.conf and /etc/hostname, which its OCI
// containers see (as containerd gives them to a pod's containers), live in
// <root>/sandboxes/<id>. A Wasm module sees no /etc.

// sandboxFile names one of those files and where containers see it.
var sandboxFiles = []struct{ name, target string }{
	{"hosts", "/etc/hosts"},
	{"resolv.conf", "/etc/resolv.conf"},
	{"hostname", "/etc/hostname"},
}

// DNS limits, as the kubelet's (validation of a pod's dnsConfig).
const (
	maxDNSServers  = 3
	maxDNSSearches = 32
)

func (s *service) sandboxDir(id string) string { return filepath.Join(s.rootDir, "sandboxes", id) }

// writeSandboxFiles writes a sandbox's files into dir: resolv.conf from its
// DNS config, or the node's when it has none; hosts with the loopback names
// (the node's on the node's network); hostname with its host name.
func writeSandboxFiles(dir string, cfg *runtime.PodSandboxConfig, hostNetwork bool) error {
	resolv, err := resolvConf(cfg.GetDnsConfig())
	if err != nil {
		return err
	}
	hosts := []byte("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")
	if hostNetwork {
		if b, err := os.ReadFile("/etc/hosts"); err == nil {
			hosts = b
		}
	}
	hostname := cfg.GetHostname()
	if hostname == "" {
		if hostname, err = os.Hostname(); err != nil {
			return fmt.Errorf("sandbox files: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("sandbox files: %w", err)
	}
	for name, b := range map[string][]byte{"hosts": hosts, "resolv.conf": resolv, "hostname": []byte(hostname + "\n")} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return fmt.Errorf("sandbox files: %w", err)
		}
	}
	return nil
}

// resolvConf is a resolv.conf of dns, or the node's when dns sets nothing.
func resolvConf(dns *runtime.DNSConfig) ([]byte, error) {
	if len(dns.GetServers()) == 0 && len(dns.GetSearches()) == 0 && len(dns.GetOptions()) == 0 {
		b, err := os.ReadFile("/etc/resolv.conf")
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return b, err
	}
	if n := len(dns.GetServers()); n > maxDNSServers {
		return nil, fmt.Errorf("%w: config.dns_config.servers: %d servers, at most %d", errInvalidArgument, n, maxDNSServers)
	}
	if n := len(dns.GetSearches()); n > maxDNSSearches {
		return nil, fmt.Errorf("%w: config.dns_config.searches: %d domains, at most %d", errInvalidArgument, n, maxDNSSearches)
	}
	var b strings.Builder
	for _, sv := range dns.GetServers() {
		if _, err := netip.ParseAddr(sv); err != nil {
			return nil, fmt.Errorf("%w: config.dns_config.servers: %q is not an IP address", errInvalidArgument, sv)
		}
		fmt.Fprintf(&b, "nameserver %s\n", sv)
	}
	for _, list := range []struct {
		field, key string
		items      []string
	}{{"searches", "search", dns.GetSearches()}, {"options", "options", dns.GetOptions()}} {
		for _, it := range list.items {
			if it == "" || strings.ContainsAny(it, " \t\n#;") {
				return nil, fmt.Errorf("%w: config.dns_config.%s: %q is not a word", errInvalidArgument, list.field, it)
			}
		}
		if len(list.items) > 0 {
			fmt.Fprintf(&b, "%s %s\n", list.key, strings.Join(list.items, " "))
		}
	}
	return []byte(b.String()), nil
}

// sandboxMounts are the sandbox's files as mounts of an OCI container,
// but for the paths the container mounts something of its own at.
func (s *service) sandboxMounts(sb *sandboxRecord, own []skiffrt.Mount, readOnly bool) []skiffrt.Mount {
	taken := map[string]bool{}
	for _, m := range own {
		taken[m.ContainerPath] = true
	}
	var out []skiffrt.Mount
	for _, f := range sandboxFiles {
		p := filepath.Join(s.sandboxDir(sb.ID), f.name)
		if taken[f.target] {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			continue // a sandbox from before these files
		}
		out = append(out, skiffrt.Mount{HostPath: p, ContainerPath: f.target, ReadOnly: readOnly})
	}
	return out
}
