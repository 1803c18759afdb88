package apiserver

import (
	"context"
	"fmt"
	"slices"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
	"skiff.dev/skiff/control/store"
)

// DefaultNamespace is where objects go when their manifest names none.
const DefaultNamespace = "default"

// NamespaceFinalizer is the finalizer a namespace gets when it is deleted,
// as in Kubernetes: the namespace controller removes it once it has deleted
// everything in the namespace, and the namespace goes with it.
const NamespaceFinalizer = "kubernetes"

// namespaceStrategy makes deleting a namespace cascade, as in Kubernetes:
// the namespace is marked (deletionTimestamp, status.phase Terminating,
// finalizer "kubernetes"), refuses new content (namespaceOpen), and the
// namespace controller deletes what it holds, then removes the finalizer.
// The final removal still checks, in the same Raft entry, that no pod or
// service is left (a service holds a cluster IP that only its deletion
// frees), and creates check that their namespace exists and is not being
// deleted the same way, so nothing outlives its namespace. The default
// namespace cannot be deleted.
func namespaceStrategy() *strategy {
	return &strategy{
		nameRule: validateLabel,
		initial:  func(o kinds.Object) { o.(*skiffv1.Namespace).Status = &skiffv1.NamespaceStatus{Phase: "Active"} },
		validate: func(o kinds.Object) fieldErrors {
			fe := fieldErrors{}
			if p := o.(*skiffv1.Namespace).GetStatus().GetPhase(); p != "" && p != "Active" && p != "Terminating" {
				fe.add("status.phase", "unsupported value %q: supported values are \"Active\", \"Terminating\"", p)
			}
			return fe
		},
		onDelete: func(o kinds.Object) {
			ns := o.(*skiffv1.Namespace)
			if !slices.Contains(ns.Metadata.Finalizers, NamespaceFinalizer) {
				ns.Metadata.Finalizers = append(ns.Metadata.Finalizers, NamespaceFinalizer)
			}
			if ns.Status == nil {
				ns.Status = &skiffv1.NamespaceStatus{}
			}
			ns.Status.Phase = "Terminating"
		},
		canDelete: func(_ context.Context, o kinds.Object) error {
			if name := o.GetMetadata().GetName(); name == DefaultNamespace {
				return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("namespace %q cannot be deleted", name))
			}
			return nil
		},
		deleteRules: func(o kinds.Object) []rule {
			name := o.GetMetadata().GetName()
			return []rule{{
				guard: store.IfNoneUnder(prefix(kinds.Pod, name)),
				err:   connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("namespace %q still has pod(s); the namespace controller deletes them first", name)),
			}, {
				// A service holds a cluster IP (and node ports) that only
				// its deletion frees.
				guard: store.IfNoneUnder(prefix(kinds.Service, name)),
				err:   connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("namespace %q still has service(s); the namespace controller deletes them first", name)),
			}}
		},
	}
}

// ensureDefault creates the default namespace when it is missing.
func (b *backend) ensureDefault(ctx context.Context) error {
	_, err := b.Create(ctx, kinds.Namespace, &skiffv1.Namespace{Metadata: &skiffv1.ObjectMeta{Name: DefaultNamespace}}, false)
	if connect.CodeOf(err) == connect.CodeAlreadyExists {
		return nil
	}
	return err
}
