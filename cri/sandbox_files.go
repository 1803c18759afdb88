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
// <root>/sandboxes/<id>. A Wasm module sees no /etc, so they are written
// only when the sandbox's first OCI container is made: RunPodSandbox fixes
// (and checks) their contents in the sandbox's record, and a pod of Wasm
// modules alone costs no files.

// sandboxFile names one of those files and where containers see it.
var sandboxFiles = []struct{ name, target string }{
	{"hosts", "/etc/hosts"},
	{"resolv.conf", "/etc/resolv.conf"},
	{"hostname", "/etc/hostname"}, // written last: once it is there, all are
}

// DNS limits, as the kubelet's (validation of a pod's dnsConfig).
const (
	maxDNSServers  = 3
	maxDNSSearches = 32
)

func (s *service) sandboxDir(id string) string { return filepath.Join(s.rootDir, "sandboxes", id) }

// sandboxFileContents are a sandbox's files by name: resolv.conf from its
// DNS config, or the node's when it has none; hosts with the loopback names
// (the node's on the node's network); hostname with its host name. A DNS
// config out of bounds is InvalidArgument naming the field.
func sandboxFileContents(cfg *runtime.PodSandboxConfig, hostNetwork bool) (map[string]string, error) {
	resolv, err := resolvConf(cfg.GetDnsConfig())
	if err != nil {
		return nil, err
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
			return nil, fmt.Errorf("sandbox files: %w", err)
		}
	}
	return map[string]string{"hosts": string(hosts), "resolv.conf": string(resolv), "hostname": hostname + "\n"}, nil
}

// writeSandboxFiles writes files into dir unless they are there already.
// Each file is written under a temporary name and renamed into place, so
// that two containers made at once in one sandbox never see one half
// written.
func writeSandboxFiles(dir string, files map[string]string) error {
	if _, err := os.Stat(filepath.Join(dir, "hostname")); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("sandbox files: %w", err)
	}
	for _, f := range sandboxFiles {
		tmp, err := os.CreateTemp(dir, "."+f.name+"-*")
		if err != nil {
			return fmt.Errorf("sandbox files: %w", err)
		}
		_, err = tmp.WriteString(files[f.name])
		if err == nil {
			err = tmp.Chmod(0o644)
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), filepath.Join(dir, f.name))
		}
		if err != nil {
			os.Remove(tmp.Name())
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
// but for the paths the container mounts something of its own at; it
// writes them first when they are not there yet.
func (s *service) sandboxMounts(sb *sandboxRecord, own []skiffrt.Mount, readOnly bool) ([]skiffrt.Mount, error) {
	if sb.Files != nil {
		if err := writeSandboxFiles(s.sandboxDir(sb.ID), sb.Files); err != nil {
			return nil, err
		}
	}
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
	return out, nil
}
