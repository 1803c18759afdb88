package main

import (
	"context"
	"errors"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/node"
)

func newCRICmd() *cobra.Command {
	var (
		dataDir, stateDir, socket, registryCfg string
		r                                      runOptions
		rt                                     runtimeFlags
	)
	cmd := &cobra.Command{
		Use:   "cri",
		Short: "Run a node's runtime host alone: the CRI server, its Wasm runtime and image store",
		Long: `Cri runs the node's CRI server (Wasm runtime, image store, one network
namespace per pod) on --cri-socket, as a process of its own: the runtime
host that "skiff agent --external-cri" drives, as a kubelet drives
containerd. Killed and restarted, the agent finds every container still
running; crictl drives the socket by hand. Its state is under
--data-dir/node and --state-dir. It needs root.`,
		Example: `  skiff cri --data-dir /var/lib/skiff-node --cri-socket /run/skiff/cri.sock &
  skiff agent --external-cri --cri-socket /run/skiff/cri.sock --data-dir /var/lib/skiff-node \
    --server 127.0.0.1:7650 --token-file /var/lib/skiff/server/token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return errors.New("skiff cri needs root: every pod gets its own network namespace")
			}
			limits, err := rt.limits()
			if err != nil {
				return err
			}
			network, err := rt.network()
			if err != nil {
				return err
			}
			return r.run(cmd, func(ctx context.Context, log *slog.Logger) error {
				srv, err := node.NewCRI(ctx, node.CRIConfig{
					DataDir: dataDir, StateDir: stateDir, Socket: socket, RegistryConfig: registryCfg, Limits: limits, Network: network, Logger: log.With("room", "cri"),
				})
				if err != nil {
					return err
				}
				defer func() { _ = srv.Close(context.Background()) }()
				log.Info("skiff cri is up", "cri", socket, "data", dataDir)
				return srv.Serve(ctx)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", defaultDataDir, "directory for the node's state (under DIR/node): images, records, container logs")
	f.StringVar(&stateDir, "state-dir", "/run/skiff", "directory for runtime state that ends with the machine (pod network namespaces)")
	f.StringVar(&socket, "cri-socket", "/run/skiff/cri.sock", "unix socket to serve CRI on")
	f.StringVar(&registryCfg, "registry-config", "", "YAML file of registry settings: mirrors, plain-HTTP registries, a docker config.json for auth, pull limits, image GC thresholds")
	rt.flags(cmd)
	r.flags(cmd)
	return cmd
}
