package main

import (
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

func newLogsCmd(g *globals) *cobra.Command {
	var (
		container            string
		follow, previous, ts bool
		tail, limitBytes     int64
		since                time.Duration
	)
	cmd := &cobra.Command{
		Use:   "logs POD",
		Short: "Print the output of a pod's container (its latest run), streamed as it is read",
		Long: `Print the output of a pod's container, stdout and stderr interleaved as
written, streamed from its node as it is read. The node keeps a bounded
amount of each run's output (10 MiB x 5 files by default, rotated by size):
older output is gone.

With -f, keep printing what the container writes next, until it exits
(once all it wrote is printed) or until interrupted.`,
		Example: `  skiff logs hello
  skiff logs web -c server -n shop
  skiff logs ticker -f --tail 10
  skiff logs web --since 5m --timestamps
  skiff logs crashy --previous`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &skiffv1.PodLogsRequest{
				Namespace: g.namespace, Name: args[0], Container: container,
				Follow: follow, Previous: previous, Timestamps: ts,
			}
			if tail < -1 {
				return fmt.Errorf("--tail: must be -1 (all lines) or more, got %d", tail)
			}
			if tail >= 0 {
				req.TailLines = &tail
			}
			if cmd.Flags().Changed("since") {
				if since <= 0 {
					return fmt.Errorf("--since: must be a positive duration, got %s", since)
				}
				s := int64((since + time.Second - 1) / time.Second)
				req.SinceSeconds = &s
			}
			if limitBytes < 0 {
				return fmt.Errorf("--limit-bytes: must not be negative, got %d", limitBytes)
			}
			if limitBytes > 0 {
				req.LimitBytes = &limitBytes
			}
			c, err := g.clients()
			if err != nil {
				return err
			}
			// The streaming client: a followed log lasts as long as the user wants.
			pods := skiffv1connect.NewPodServiceClient(c.stream, c.base)
			st, err := pods.StreamLogs(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return plain(err)
			}
			defer st.Close()
			out := cmd.OutOrStdout()
			for st.Receive() {
				if _, err := out.Write(st.Msg().GetData()); err != nil {
					return err
				}
			}
			if err := st.Err(); err != nil && cmd.Context().Err() == nil {
				return plain(err)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&container, "container", "c", "", "container name; may be left out when the pod has one")
	cmd.Flags().StringVarP(&g.namespace, "namespace", "n", "", "namespace (default \"default\")")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing what the container writes next, until it exits")
	cmd.Flags().BoolVarP(&previous, "previous", "p", false, "print the output of the container's run before its latest")
	cmd.Flags().Int64Var(&tail, "tail", -1, "print only the last N lines (-1: all)")
	cmd.Flags().DurationVar(&since, "since", 0, "print only lines written within this duration (5s, 2m, 3h)")
	cmd.Flags().BoolVar(&ts, "timestamps", false, "prefix each line with the time it was written (RFC 3339)")
	cmd.Flags().Int64Var(&limitBytes, "limit-bytes", 0, "stop after printing N bytes (0: no limit)")
	return cmd
}
