package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/control/api/quantity"
	"skiff.dev/skiff/cri"
	"skiff.dev/skiff/node"
	"skiff.dev/skiff/runtime/wasm"
)

// runtimeFlags are the node runtime host's limits and pod network (skiff
// agent, skiff dev, skiff cri).
type runtimeFlags struct {
	memoryLimit, moduleCache, logMaxSize string
	logMaxFiles                          int
	noRunc                               bool
	cniConfDir                           string
	noCNI                                bool
}

func (r *runtimeFlags) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&r.memoryLimit, "wasm-memory-limit", fmt.Sprintf("%dMi", wasm.DefaultMemoryLimit>>20), "linear memory a Wasm container may grow to when its resources set no memory limit")
	f.StringVar(&r.moduleCache, "wasm-module-cache", fmt.Sprintf("%dMi", wasm.DefaultModuleCacheBytes>>20), "compiled Wasm modules kept in memory (least recently used go first; running ones stay)")
	f.StringVar(&r.logMaxSize, "container-log-max-size", fmt.Sprintf("%dMi", cri.DefaultLogMaxSize>>20), "size past which a container's log file is rotated (the kubelet's containerLogMaxSize)")
	f.IntVar(&r.logMaxFiles, "container-log-max-files", cri.DefaultLogMaxFiles, "log files kept per container run, the live one included (at least 2)")
	f.BoolVar(&r.noRunc, "no-runc", false, "offer only the wasm runtime, even where runc is installed: pods with OCI images or runtimeClassName runc go to other nodes")
	f.StringVar(&r.cniConfDir, "cni-conf-dir", "", "directory of your own CNI network config (as /etc/cni/net.d): its first *.conflist networks the pods. Without one, a node running as root with the CNI plugins in /usr/lib/cni or /opt/cni/bin (Debian package containernetworking-plugins) puts pods on its own bridge skiff0, with addresses from the node's pod CIDR, and runs no pod until it has one")
	f.BoolVar(&r.noCNI, "no-cni", false, "give pods loopback only (no pod IP), even where CNI could network them")
}

// network reads the pod network flags.
func (r *runtimeFlags) network() (node.PodNetwork, error) {
	if r.noCNI && r.cniConfDir != "" {
		return node.PodNetwork{}, fmt.Errorf("--cni-conf-dir: a CNI config with --no-cni: choose one")
	}
	if r.cniConfDir != "" {
		if st, err := os.Stat(r.cniConfDir); err != nil || !st.IsDir() {
			return node.PodNetwork{}, fmt.Errorf("--cni-conf-dir: %q is not a directory", r.cniConfDir)
		}
	}
	return node.PodNetwork{CNI: !r.noCNI, CNIConfDir: r.cniConfDir}, nil
}

// limits reads the flags, naming the one that is wrong; an unset one
// (empty, or 0 files) keeps cri's default.
func (r *runtimeFlags) limits() (node.RuntimeLimits, error) {
	var l node.RuntimeLimits
	for _, f := range []struct {
		name, v string
		into    *int64
	}{
		{"wasm-memory-limit", r.memoryLimit, &l.DefaultMemoryLimit},
		{"wasm-module-cache", r.moduleCache, &l.ModuleCacheBytes},
		{"container-log-max-size", r.logMaxSize, &l.LogMaxSize},
	} {
		if f.v == "" {
			continue
		}
		n, err := quantity.Bytes(f.v)
		if err != nil {
			return l, fmt.Errorf("--%s: invalid value %q: %w", f.name, f.v, err)
		}
		*f.into = n
	}
	if l.DefaultMemoryLimit != 0 && (l.DefaultMemoryLimit < 64<<10 || l.DefaultMemoryLimit > 4<<30) {
		return l, fmt.Errorf("--wasm-memory-limit: invalid value %q: must be from 64Ki to 4Gi (a Wasm memory's most)", r.memoryLimit)
	}
	if r.logMaxFiles != 0 && r.logMaxFiles < 2 {
		return l, fmt.Errorf("--container-log-max-files: invalid value %d: must be 2 or more (the live file and one rotated)", r.logMaxFiles)
	}
	l.LogMaxFiles = r.logMaxFiles
	l.NoRunc = r.noRunc
	return l, nil
}
