package image

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Defaults for Config.
const (
	DefaultMaxModuleBytes = 256 << 20 // a module
	DefaultMaxLayerBytes  = 1 << 30   // a compressed layer
	DefaultMaxImageBytes  = 8 << 30   // an image's layers unpacked, or an archive
	DefaultPullTimeout    = 5 * time.Minute
	DefaultGCHigh         = 85 // percent of the filesystem, as the kubelet's imageGCHighThresholdPercent
	DefaultGCLow          = 80 // imageGCLowThresholdPercent
	DefaultGCMinAge       = 2 * time.Minute
)

// Config is the node's registry and store settings, read from the file
// given to the node with --registry-config (YAML):
//
//	registries:
//	  docker.io:
//	    mirrors: ["mirror.internal:5000"]   # tried in order, then the registry itself
//	    mirrorsOnly: false                   # true: never the registry itself
//	  registry.internal:5000:
//	    plainHTTP: true                      # http:// instead of https://
//	auth: /etc/skiff/registry-auth.json     # a docker config.json; default: ~/.docker/config.json
//	pullTimeout: 5m
//	maxModuleBytes: 268435456
//	maxLayerBytes: 1073741824    # a compressed layer
//	maxImageBytes: 8589934592    # an image's layers unpacked, or an image archive
//	gc: {highThresholdPercent: 85, lowThresholdPercent: 80, minAge: 2m}
//
// A registry on localhost, 127.0.0.0/8 or ::1 is reached over plain HTTP
// without configuration, as containerd does. (go-containerregistry, which
// pulls, also falls back to plain HTTP for RFC 1918 addresses when HTTPS
// fails.)
type Config struct {
	Registries     map[string]Registry `json:"registries,omitempty"`
	Auth           string              `json:"auth,omitempty"`
	PullTimeout    Duration            `json:"pullTimeout,omitempty"`
	MaxModuleBytes int64               `json:"maxModuleBytes,omitempty"`
	MaxLayerBytes  int64               `json:"maxLayerBytes,omitempty"`
	MaxImageBytes  int64               `json:"maxImageBytes,omitempty"`
	GC             GCPolicy            `json:"gc,omitempty"`
}

// Registry is the settings of one registry host ("docker.io", "host:port").
type Registry struct {
	Mirrors   []string `json:"mirrors,omitempty"`
	PlainHTTP bool     `json:"plainHTTP,omitempty"`
	// MirrorsOnly never contacts the registry itself: a pull that no
	// mirror can serve fails (an air-gapped node, or a test that must
	// not reach out).
	MirrorsOnly bool `json:"mirrorsOnly,omitempty"`
}

// GCPolicy is when GC removes images: once the filesystem of the store is
// HighThresholdPercent full, unused images older than MinAge go, least
// recently pulled first, until it is LowThresholdPercent full.
// HighThresholdPercent 100 turns GC off.
type GCPolicy struct {
	HighThresholdPercent int      `json:"highThresholdPercent,omitempty"`
	LowThresholdPercent  int      `json:"lowThresholdPercent,omitempty"`
	MinAge               Duration `json:"minAge,omitempty"`
}

// Duration is a time.Duration written as "2m" in YAML.
type Duration struct{ time.Duration }

func (d Duration) MarshalJSON() ([]byte, error) { return []byte(`"` + d.String() + `"`), nil }

func (d *Duration) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %s (want e.g. \"90s\" or \"5m\")", b)
	}
	d.Duration = v
	return nil
}

// LoadConfig reads a registry config file. Unknown fields are refused by
// name.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read registry config: %w", err)
	}
	var c Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return Config{}, fmt.Errorf("registry config %s: %w", path, err)
	}
	if err := c.validate(); err != nil {
		return Config{}, fmt.Errorf("registry config %s: %w", path, err)
	}
	return c, nil
}

func (c Config) validate() error {
	for host, r := range c.Registries {
		if err := checkDomain(host); err != nil {
			return fmt.Errorf("registries[%s]: %w", host, err)
		}
		for i, m := range r.Mirrors {
			if err := checkDomain(m); err != nil {
				return fmt.Errorf("registries[%s].mirrors[%d]: %w", host, i, err)
			}
		}
		if r.MirrorsOnly && len(r.Mirrors) == 0 {
			return fmt.Errorf("registries[%s].mirrorsOnly: set without mirrors, no pull from %s could succeed", host, host)
		}
	}
	if c.MaxModuleBytes < 0 {
		return fmt.Errorf("maxModuleBytes: invalid value %d: must be positive", c.MaxModuleBytes)
	}
	if c.MaxLayerBytes < 0 {
		return fmt.Errorf("maxLayerBytes: invalid value %d: must be positive", c.MaxLayerBytes)
	}
	if c.MaxImageBytes < 0 {
		return fmt.Errorf("maxImageBytes: invalid value %d: must be positive", c.MaxImageBytes)
	}
	if c.PullTimeout.Duration < 0 {
		return fmt.Errorf("pullTimeout: invalid value %s: must be positive", c.PullTimeout)
	}
	g := c.GC
	if g.HighThresholdPercent < 0 || g.HighThresholdPercent > 100 {
		return fmt.Errorf("gc.highThresholdPercent: invalid value %d: must be 0 to 100", g.HighThresholdPercent)
	}
	if g.LowThresholdPercent < 0 || g.LowThresholdPercent > 100 {
		return fmt.Errorf("gc.lowThresholdPercent: invalid value %d: must be 0 to 100", g.LowThresholdPercent)
	}
	if g.LowThresholdPercent != 0 && g.HighThresholdPercent != 0 && g.LowThresholdPercent > g.HighThresholdPercent {
		return fmt.Errorf("gc.lowThresholdPercent: invalid value %d: must not be above gc.highThresholdPercent (%d)", g.LowThresholdPercent, g.HighThresholdPercent)
	}
	if g.MinAge.Duration < 0 {
		return fmt.Errorf("gc.minAge: invalid value %s: must not be negative", g.MinAge)
	}
	return nil
}

func (c Config) maxModuleBytes() int64 {
	if c.MaxModuleBytes > 0 {
		return c.MaxModuleBytes
	}
	return DefaultMaxModuleBytes
}

func (c Config) maxLayerBytes() int64 {
	if c.MaxLayerBytes > 0 {
		return c.MaxLayerBytes
	}
	return DefaultMaxLayerBytes
}

func (c Config) maxImageBytes() int64 {
	if c.MaxImageBytes > 0 {
		return c.MaxImageBytes
	}
	return DefaultMaxImageBytes
}

func (c Config) pullTimeout() time.Duration {
	if c.PullTimeout.Duration > 0 {
		return c.PullTimeout.Duration
	}
	return DefaultPullTimeout
}

// registry returns the settings of host; "docker.io" and "index.docker.io"
// are one registry.
func (c Config) registry(host string) Registry {
	if r, ok := c.Registries[host]; ok {
		return r
	}
	if host == "index.docker.io" {
		return c.Registries["docker.io"]
	}
	return Registry{}
}

// plainHTTP reports whether host is reached over http://: loopback hosts
// always, others when configured.
func (c Config) plainHTTP(host string) bool {
	h := host
	if sh, _, err := net.SplitHostPort(host); err == nil {
		h = sh
	}
	if h == "localhost" {
		return true
	}
	if ip := net.ParseIP(strings.Trim(h, "[]")); ip != nil && ip.IsLoopback() {
		return true
	}
	return c.registry(host).PlainHTTP
}
