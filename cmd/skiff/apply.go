package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
	"skiff.dev/skiff/control/api/manifest"
)

func newApplyCmd(g *globals) *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|-",
		Short: "Create or update objects from Kubernetes-style YAML manifests",
		Long: `Apply reads every manifest first and checks it with the server (a dry run), and
only then writes: a file that is wrong anywhere applies nothing. It prints
what it did to each object: created, configured or unchanged.

A directory applies its .yaml, .yml and .json files in name order; - reads
standard input. Pods cannot be changed once created except by deleting them.`,
		Example: "  skiff apply -f examples/hello/pod.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return fmt.Errorf("-f: required flag: name a file, a directory or -")
			}
			objs, err := readManifests(files, cmd.InOrStdin())
			if err != nil {
				return err
			}
			c, err := g.clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			for _, o := range objs {
				if _, err := applyObject(ctx, c, o, g.namespace, true); err != nil {
					return fmt.Errorf("%s: %w", o.Source, plain(err))
				}
			}
			for _, o := range objs {
				verb, err := applyObject(ctx, c, o, g.namespace, false)
				if err != nil {
					return fmt.Errorf("%s: %w", o.Source, plain(err))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", qualified(o.Kind, o.Msg.GetMetadata().GetName()), verb)
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "manifest file, directory, or - for standard input")
	cmd.Flags().StringVarP(&g.namespace, "namespace", "n", "", "namespace for objects whose manifest names none (default \"default\")")
	return cmd
}

// readManifests decodes every file before anything is sent.
func readManifests(paths []string, stdin io.Reader) ([]manifest.Object, error) {
	var out []manifest.Object
	for _, p := range paths {
		files := []string{p}
		if p != "-" {
			st, err := os.Stat(p)
			if err != nil {
				return nil, fmt.Errorf("-f %s: %w", p, err)
			}
			if st.IsDir() {
				if files, err = manifestFiles(p); err != nil {
					return nil, err
				}
			}
		}
		for _, f := range files {
			var data []byte
			var err error
			if f == "-" {
				data, err = io.ReadAll(stdin)
				f = "<stdin>"
			} else {
				data, err = os.ReadFile(f)
			}
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", f, err)
			}
			objs, err := manifest.Decode(f, data)
			if err != nil {
				return nil, err
			}
			out = append(out, objs...)
		}
	}
	return out, nil
}

func manifestFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read directory %s: %w", dir, err)
	}
	var files []string
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".yaml", ".yml", ".json":
			if !e.IsDir() {
				files = append(files, filepath.Join(dir, e.Name()))
			}
		}
	}
	sort.Strings(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("-f %s: no .yaml, .yml or .json files in the directory", dir)
	}
	return files, nil
}

// applyConflictRetries bounds how often apply reads an object again when
// someone else (the scheduler, an agent reporting status) wrote it between
// apply's read and its write, as client-go's RetryOnConflict does.
const applyConflictRetries = 5

// applyObject creates the object, or updates it when it exists. It returns
// what it did: "created", "configured" or "unchanged". An update that would
// change nothing writes nothing. A write that meets a newer version of the
// object (a conflict) is made again on a fresh read.
func applyObject(ctx context.Context, c *clients, o manifest.Object, ns string, dryRun bool) (string, error) {
	return retryOnConflict(applyConflictRetries, func() (string, error) { return applyOnce(ctx, c, o, ns, dryRun) })
}

// retryOnConflict calls f until it does not fail with a conflict
// (Aborted), attempts times at most.
func retryOnConflict(attempts int, f func() (string, error)) (string, error) {
	for attempt := 1; ; attempt++ {
		did, err := f()
		if connect.CodeOf(err) != connect.CodeAborted || attempt >= attempts {
			return did, err
		}
	}
}

// applyOnce is one read and write of applyObject.
func applyOnce(ctx context.Context, c *clients, o manifest.Object, ns string, dryRun bool) (string, error) {
	m := o.Msg.GetMetadata()
	if m == nil {
		return "", fmt.Errorf("metadata: required value")
	}
	if o.Kind.Namespaced && m.Namespace == "" {
		m.Namespace = ns
	}
	client := c.of(o.Kind)
	cur, err := client.Get(ctx, m.Namespace, m.Name)
	if connect.CodeOf(err) == connect.CodeNotFound || (err != nil && m.Name == "") {
		_, err := client.Create(ctx, o.Msg, dryRun)
		return "created", err
	}
	if err != nil {
		return "", err
	}
	next, err := client.Update(ctx, desired(cur, o.Msg), true)
	if err != nil {
		return "", err
	}
	if sameObject(cur, next) {
		return "unchanged", nil
	}
	if !dryRun {
		if _, err := client.Update(ctx, desired(cur, o.Msg), false); err != nil {
			return "", err
		}
	}
	return "configured", nil
}

// controllerAnnotations is the prefix of the annotations a controller sets
// on the objects it acts on (deployment.kubernetes.io/revision).
const controllerAnnotations = "deployment.kubernetes.io/"

// desired is the object apply writes over cur: the manifest's labels,
// annotations, finalizers and every top-level field but metadata and
// status (the spec) on the stored object. A pod's binding stays when the
// manifest names no node; the status is the server's.
func desired(cur, manifest kinds.Object) kinds.Object {
	next := proto.Clone(cur).(kinds.Object)
	nm, mm := next.GetMetadata(), manifest.GetMetadata()
	nm.Labels, nm.Annotations, nm.Finalizers = mm.GetLabels(), maps.Clone(mm.GetAnnotations()), mm.GetFinalizers()
	// What controllers note on the object (a deployment's revision) stays
	// unless the manifest says otherwise, as kubectl apply's merge keeps it.
	for k, v := range cur.GetMetadata().GetAnnotations() {
		if _, given := nm.Annotations[k]; !given && strings.HasPrefix(k, controllerAnnotations) {
			if nm.Annotations == nil {
				nm.Annotations = map[string]string{}
			}
			nm.Annotations[k] = v
		}
	}
	src, dst := manifest.ProtoReflect(), next.ProtoReflect()
	fields := dst.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.Name() == "metadata" || fd.Name() == "status" {
			continue
		}
		if src.Has(fd) {
			dst.Set(fd, src.Get(fd))
		} else {
			dst.Clear(fd)
		}
	}
	next = proto.Clone(next).(kinds.Object) // share nothing with the manifest
	if p, ok := next.(*skiffv1.Pod); ok && p.GetSpec() != nil && p.Spec.NodeName == "" {
		p.Spec.NodeName = cur.(*skiffv1.Pod).GetSpec().GetNodeName()
	}
	return next
}

// sameObject reports whether two versions of an object are equal but for
// their resourceVersion.
func sameObject(before, after proto.Message) bool {
	a, b := proto.Clone(before).(kinds.Object), proto.Clone(after).(kinds.Object)
	a.GetMetadata().ResourceVersion, b.GetMetadata().ResourceVersion = 0, 0
	return proto.Equal(a, b)
}
