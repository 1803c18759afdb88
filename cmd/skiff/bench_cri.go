package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// benchCRIOptions are the flags of `skiff bench cri`.
type benchCRIOptions struct {
	endpoint string
	image    string
	command  []string
	handler  string
	runs     int
	timeout  time.Duration
}

func newBenchCRICmd() *cobra.Command {
	o := &benchCRIOptions{}
	cmd := &cobra.Command{
		Use:   "cri --endpoint unix:///PATH --image REF",
		Short: "Measure pod start through any CRI runtime: RunPodSandbox + CreateContainer + StartContainer",
		Long: `Cri starts --runs pods one after the other through the CRI socket at
--endpoint (skiff's, containerd's, CRI-O's), each with one container of
--image running --command, and removes each pod before the next. It
reports the p50 and p99 of RunPodSandbox, CreateContainer, StartContainer
and of the three together, as a kubelet would see them: the figures of the
runtime alone, without crictl's own process start per call. The image is
pulled first if the runtime does not have it.`,
		Example: `  skiff bench cri --endpoint unix:///run/skiff/cri.sock --image busybox --command /bin/sleep,3600
  skiff bench cri --endpoint unix:///run/containerd/containerd.sock --image busybox --command /bin/sleep,3600 --runs 20`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			return runBenchCRI(ctx, cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.endpoint, "endpoint", "", "the CRI socket, unix:///PATH (required)")
	f.StringVar(&o.image, "image", "", "the image of each pod's container (required)")
	f.StringSliceVar(&o.command, "command", []string{"/bin/sleep", "3600"}, "the container's command, comma-separated; it must keep running")
	f.StringVar(&o.handler, "runtime-handler", "", "the sandboxes' runtime handler (empty: the runtime's default)")
	f.IntVar(&o.runs, "runs", 20, "pods to start, one after the other")
	f.DurationVar(&o.timeout, "timeout", 10*time.Minute, "the whole run's deadline")
	return cmd
}

func (o *benchCRIOptions) validate() error {
	switch {
	case !strings.HasPrefix(o.endpoint, "unix://") || len(o.endpoint) == len("unix://"):
		return fmt.Errorf("--endpoint %q: want unix:///PATH", o.endpoint)
	case o.image == "":
		return errors.New("--image is required")
	case len(o.command) == 0 || o.command[0] == "":
		return errors.New("--command: the container needs a command")
	case o.runs < 1 || o.runs > 10000:
		return fmt.Errorf("--runs %d: want 1 to 10000", o.runs)
	case o.timeout <= 0:
		return fmt.Errorf("--timeout %v: want a positive duration", o.timeout)
	}
	return nil
}

func runBenchCRI(ctx context.Context, out io.Writer, o *benchCRIOptions) error {
	conn, err := grpc.NewClient(o.endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rs, is := runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
	if st, err := is.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: o.image}}); err != nil {
		return fmt.Errorf("image status of %s: %w", o.image, err)
	} else if st.GetImage() == nil {
		if _, err := is.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: o.image}}); err != nil {
			return fmt.Errorf("pull %s: %w", o.image, err)
		}
	}
	logs, err := os.MkdirTemp("", "skiff-bench-cri-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(logs)
	var sandbox, create, start, total latencies
	for i := range o.runs {
		name := fmt.Sprintf("bench-cri-%d-%d", time.Now().UnixNano(), i)
		sbCfg := &runtimeapi.PodSandboxConfig{
			Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "bench", Uid: name},
			LogDirectory: filepath.Join(logs, name),
			Linux:        &runtimeapi.LinuxPodSandboxConfig{},
		}
		t0 := time.Now()
		pod, err := rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg, RuntimeHandler: o.handler})
		if err != nil {
			return fmt.Errorf("run pod sandbox: %w", err)
		}
		t1 := time.Now()
		ctr, err := rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod.PodSandboxId, SandboxConfig: sbCfg, Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Image: &runtimeapi.ImageSpec{Image: o.image},
			Command: o.command, LogPath: "c.log", Linux: &runtimeapi.LinuxContainerConfig{},
		}})
		var t2 time.Time
		if err == nil {
			t2 = time.Now()
			_, err = rs.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctr.ContainerId})
		}
		t3 := time.Now()
		// Removed before the error is returned: a failed run leaves no pod.
		_, stopErr := rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.PodSandboxId})
		_, rmErr := rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.PodSandboxId})
		if err = errors.Join(err, stopErr, rmErr); err != nil {
			return fmt.Errorf("pod %d: %w", i, err)
		}
		sandbox, create, start, total = append(sandbox, t1.Sub(t0)), append(create, t2.Sub(t1)), append(start, t3.Sub(t2)), append(total, t3.Sub(t0))
	}
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "%d pods of %s through %s\n", o.runs, o.image, o.endpoint)
	fmt.Fprintln(tw, "CALL\tP50\tP99")
	for _, r := range []struct {
		name string
		l    latencies
	}{{"RunPodSandbox", sandbox}, {"CreateContainer", create}, {"StartContainer", start}, {"all three", total}} {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.name, ms(r.l.percentile(0.5)), ms(r.l.percentile(0.99)))
	}
	return tw.Flush()
}
