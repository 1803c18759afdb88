package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/store"
)

func newSnapshotCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Save the control plane's state to a file, or seed a new server from one",
		Long: `A snapshot is a consistent copy of the server's store: every object with its
resourceVersion, at one revision. "save" asks a running server for one;
"restore" seeds the data directory of a new one-server cluster from it, as
"etcdctl snapshot restore" does. For a cluster of three, start the restored
server with --gossip-listen and --raft-listen, then two new servers with
--join its gossip address: its leader makes them voters.`,
	}
	save := &cobra.Command{
		Use:   "save FILE",
		Short: "Save a snapshot of the running server's store to FILE",
		Long: `Save asks the server (--server) for a consistent copy of its store and
writes it to FILE, replacing FILE only once the copy is complete and checked.`,
		Example: "  skiff snapshot save backup.snap",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Interrupted, it removes its temporary file and leaves FILE be.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			c, err := g.clients()
			if err != nil {
				return err
			}
			info, err := saveSnapshot(ctx, c, args[0])
			if err != nil {
				return fmt.Errorf("save snapshot: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "saved snapshot at revision %d (%d bytes, sha256 %x)\n", info.Revision, info.Size, info.SHA256)
			return nil
		},
	}
	var dataDir string
	restore := &cobra.Command{
		Use:   "restore FILE --data-dir DIR",
		Short: "Seed a new one-server cluster in DIR from a snapshot (offline)",
		Long: `Restore checks FILE (its header, size and SHA-256, then the database in it)
and lays out DIR/server so that "skiff server --data-dir DIR" or "skiff dev
--data-dir DIR" starts from it: every object keeps its uid and
resourceVersion, and new writes get revisions above the snapshot's. Watches
can resume from the snapshot's revision, not from before it. DIR/server must
not hold a store yet; no server may run on DIR. A file that is damaged or
truncated is refused, and DIR is left as it was.`,
		Example: "  skiff snapshot restore backup.snap --data-dir /var/lib/skiff-restored\n  skiff server --data-dir /var/lib/skiff-restored",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// The server keeps its store under DataDir/server (control/server).
			dir := filepath.Join(dataDir, "server")
			info, err := store.RestoreSnapshot(args[0], dir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored snapshot at revision %d into %s; start it with: skiff server --data-dir %s\n", info.Revision, dir, dataDir)
			return nil
		},
	}
	restore.Flags().StringVar(&dataDir, "data-dir", "", "data directory of the new server (required; its server/ must not hold a store)")
	_ = restore.MarkFlagRequired("data-dir")
	cmd.AddCommand(save, restore)
	return cmd
}

// saveSnapshot streams a snapshot from the server into the file at path,
// which it replaces only once the stream is complete and its data match
// the summary the server sent last.
func saveSnapshot(ctx context.Context, c *clients, path string) (store.SnapshotInfo, error) {
	f, err := store.CreateSnapshotFile(path)
	if err != nil {
		return store.SnapshotInfo{}, err
	}
	defer f.Abort()
	stream, err := skiffv1connect.NewClusterServiceClient(c.stream, c.base).Snapshot(ctx, connect.NewRequest(&skiffv1.SnapshotRequest{}))
	if err != nil {
		return store.SnapshotInfo{}, err
	}
	defer stream.Close()
	var sum *skiffv1.SnapshotSummary
	for stream.Receive() {
		m := stream.Msg()
		if sum != nil {
			return store.SnapshotInfo{}, errors.New("the server sent data after the snapshot's summary")
		}
		if _, err := f.Write(m.Data); err != nil {
			return store.SnapshotInfo{}, err
		}
		sum = m.Summary
	}
	if err := stream.Err(); err != nil {
		return store.SnapshotInfo{}, err
	}
	if sum == nil {
		return store.SnapshotInfo{}, fmt.Errorf("the stream ended without the snapshot's summary: incomplete: %w", io.ErrUnexpectedEOF)
	}
	if len(sum.Sha256) != sha256.Size {
		return store.SnapshotInfo{}, fmt.Errorf("the server sent a sha256 of %d bytes", len(sum.Sha256))
	}
	info := store.SnapshotInfo{Revision: sum.Revision, Size: int64(sum.Size), SHA256: [sha256.Size]byte(sum.Sha256)}
	if err := f.Commit(info); err != nil {
		return store.SnapshotInfo{}, err
	}
	return info, nil
}
