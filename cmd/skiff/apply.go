package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/manifest"
)

func newApplyCmd(g *globals) *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|-",
		Short: "Create or update objects from Kubernetes-style YAML manifests",
		Long: `Apply reads every manifest first and checks it with the server (a dry run), and
only then writes: a file that is wrong anywhere applies nothing.

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
			c := newClients(g.server)
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
				fmt.Fprintf(cmd.OutOrStdout(), "%s/%s %s\n", strings.ToLower(o.Kind.Kind), meta(o.Msg).GetName(), verb)
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

type metaHolder interface {
	GetMetadata() *skiffv1.ObjectMeta
}

func meta(m proto.Message) *skiffv1.ObjectMeta {
	if h, ok := m.(metaHolder); ok {
		return h.GetMetadata()
	}
	return nil
}

// kindClient is how apply reads and writes one object of one kind.
type kindClient struct {
	get    func(context.Context) (proto.Message, error)
	create func(ctx context.Context, dryRun bool) error
	// update writes the manifest's fields onto cur (which it may change).
	update func(ctx context.Context, cur proto.Message, dryRun bool) (proto.Message, error)
}

// applyObject creates the object, or updates it when it exists. It returns
// what it did: "created", "configured" or "unchanged". An update that would
// change nothing writes nothing.
func applyObject(ctx context.Context, c *clients, o manifest.Object, ns string, dryRun bool) (string, error) {
	m := meta(o.Msg)
	if m == nil {
		return "", fmt.Errorf("metadata: required value")
	}
	if o.Kind.Namespaced && m.Namespace == "" {
		m.Namespace = ns
	}
	kc, err := clientFor(c, o.Msg)
	if err != nil {
		return "", err
	}
	cur, err := kc.get(ctx)
	if connect.CodeOf(err) == connect.CodeNotFound || (err != nil && m.Name == "") {
		return "created", kc.create(ctx, dryRun)
	}
	if err != nil {
		return "", err
	}
	next, err := kc.update(ctx, proto.Clone(cur), true)
	if err != nil {
		return "", err
	}
	if sameObject(cur, next) {
		return "unchanged", nil
	}
	if !dryRun {
		if _, err := kc.update(ctx, proto.Clone(cur), false); err != nil {
			return "", err
		}
	}
	return "configured", nil
}

func clientFor(c *clients, msg proto.Message) (*kindClient, error) {
	m := meta(msg)
	switch obj := msg.(type) {
	case *skiffv1.Pod:
		return &kindClient{
			get: func(ctx context.Context) (proto.Message, error) {
				r, err := c.pods.Get(ctx, connect.NewRequest(&skiffv1.GetPodRequest{Namespace: m.Namespace, Name: m.Name}))
				return msgOf(r, err)
			},
			create: func(ctx context.Context, dry bool) error {
				_, err := c.pods.Create(ctx, connect.NewRequest(&skiffv1.CreatePodRequest{Pod: obj, DryRun: dry}))
				return err
			},
			update: func(ctx context.Context, cur proto.Message, dry bool) (proto.Message, error) {
				next := cur.(*skiffv1.Pod)
				node := next.GetSpec().GetNodeName()
				next.Spec = proto.Clone(obj.GetSpec()).(*skiffv1.PodSpec)
				if next.Spec.NodeName == "" {
					next.Spec.NodeName = node
				}
				next.Metadata.Labels, next.Metadata.Annotations = m.Labels, m.Annotations
				r, err := c.pods.Update(ctx, connect.NewRequest(&skiffv1.UpdatePodRequest{Pod: next, DryRun: dry}))
				return msgOf(r, err)
			},
		}, nil
	case *skiffv1.Namespace:
		return &kindClient{
			get: func(ctx context.Context) (proto.Message, error) {
				r, err := c.namespaces.Get(ctx, connect.NewRequest(&skiffv1.GetNamespaceRequest{Name: m.Name}))
				return msgOf(r, err)
			},
			create: func(ctx context.Context, dry bool) error {
				_, err := c.namespaces.Create(ctx, connect.NewRequest(&skiffv1.CreateNamespaceRequest{Namespace: obj, DryRun: dry}))
				return err
			},
			update: func(ctx context.Context, cur proto.Message, dry bool) (proto.Message, error) {
				next := cur.(*skiffv1.Namespace)
				next.Metadata.Labels, next.Metadata.Annotations = m.Labels, m.Annotations
				r, err := c.namespaces.Update(ctx, connect.NewRequest(&skiffv1.UpdateNamespaceRequest{Namespace: next, DryRun: dry}))
				return msgOf(r, err)
			},
		}, nil
	case *skiffv1.Node:
		return &kindClient{
			get: func(ctx context.Context) (proto.Message, error) {
				r, err := c.nodes.Get(ctx, connect.NewRequest(&skiffv1.GetNodeRequest{Name: m.Name}))
				return msgOf(r, err)
			},
			create: func(ctx context.Context, dry bool) error {
				_, err := c.nodes.Create(ctx, connect.NewRequest(&skiffv1.CreateNodeRequest{Node: obj, DryRun: dry}))
				return err
			},
			update: func(ctx context.Context, cur proto.Message, dry bool) (proto.Message, error) {
				next := cur.(*skiffv1.Node)
				next.Spec = obj.GetSpec()
				next.Metadata.Labels, next.Metadata.Annotations = m.Labels, m.Annotations
				r, err := c.nodes.Update(ctx, connect.NewRequest(&skiffv1.UpdateNodeRequest{Node: next, DryRun: dry}))
				return msgOf(r, err)
			},
		}, nil
	}
	return nil, fmt.Errorf("kind %T cannot be applied", msg)
}

func msgOf[T any, P interface {
	*T
	proto.Message
}](r *connect.Response[T], err error) (proto.Message, error) {
	if err != nil {
		return nil, err
	}
	return P(r.Msg), nil
}

// sameObject reports whether two versions of an object are equal but for
// their resourceVersion.
func sameObject(before, after proto.Message) bool {
	a, b := proto.Clone(before), proto.Clone(after)
	meta(a).ResourceVersion, meta(b).ResourceVersion = 0, 0
	return proto.Equal(a, b)
}

// plain turns a Connect error into its message alone, which already names
// the object, the field and the reason.
func plain(err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		// No response metadata: the request never reached a server.
		if ce.Code() == connect.CodeUnavailable && len(ce.Meta()) == 0 {
			return fmt.Errorf("cannot reach the skiff server (%s): is `skiff dev` running? Set --server or SKIFF_SERVER", ce.Message())
		}
		return fmt.Errorf("%s", ce.Message())
	}
	return err
}
