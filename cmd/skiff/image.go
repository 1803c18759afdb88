package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/node"
	"skiff.dev/skiff/runtime/image"
)

const defaultDataDir = "/var/lib/skiff"

// imageDir is where a node keeps its images under its data directory.
func imageDir(dataDir string) string { return node.ImageDir(dataDir) }

func newImageCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Manage the images of this node",
		Long: `Images are WebAssembly modules and Linux container images kept in the
node's image store under --data-dir. A pod's "image:" names one. The node
pulls images from OCI registries itself; import is for air-gapped nodes.`,
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", defaultDataDir, "the node's data directory (as given to skiff dev)")
	imp := &cobra.Command{
		Use:   "import NAME FILE",
		Short: "Put a WebAssembly module or an OCI image archive into the node's image store under NAME",
		Long: `Import stores FILE under NAME. FILE is a WebAssembly module (.wasm) or a tar
of an OCI image layout or a docker-save archive (as "crane pull --format=oci"
or "docker save" write them). A Wasm artifact, or an image whose entrypoint
is a .wasm file, is stored as its module; any other image must be for linux
on this node's architecture, and its layers are unpacked.`,
		Example: `  skiff image import hello examples/hello/hello.wasm
  skiff image import registry.local/app:v1 app.tar
  docker save busybox:1.36 -o busybox.tar && skiff image import busybox:1.36 busybox.tar`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := image.Open(imageDir(dataDir))
			if err != nil {
				return err
			}
			f, err := os.Open(args[1])
			if err != nil {
				return err
			}
			defer f.Close()
			var magic [4]byte
			n, _ := f.ReadAt(magic[:], 0)
			importFn := st.ImportArchive
			if string(magic[:n]) == "\x00asm" {
				importFn = st.Import
			}
			img, err := importFn(cmd.Context(), args[0], f)
			if err != nil {
				return err
			}
			ref, _ := image.NormalizeRef(args[0])
			fmt.Fprintf(cmd.OutOrStdout(), "imported %s as %s (%s, %s, %d bytes)\n", args[1], ref, img.ID, imageType(img), img.Size)
			return nil
		},
	}
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the images in the node's image store",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := image.Open(imageDir(dataDir))
			if err != nil {
				return err
			}
			imgs, err := st.List()
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 3, ' ', 0)
			fmt.Fprintln(tw, "NAME\tID\tTYPE\tSIZE")
			for _, img := range imgs {
				for _, n := range img.Names {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", n, img.ID[:19], imageType(img), img.Size)
				}
			}
			return tw.Flush()
		},
	}
	cmd.AddCommand(imp, ls, newImagePullCmd(&dataDir))
	return cmd
}

// imageType is the TYPE column of "skiff image ls": wasm or linux.
func imageType(img image.Image) string {
	if img.MediaType == image.MediaTypeOCI {
		return "linux"
	}
	return "wasm"
}
