package apiserver

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
	"skiff.dev/skiff/control/store"
)

// DefaultNamespace is where objects go when their manifest names none.
const DefaultNamespace = "default"

// namespaceStrategy refuses to delete a namespace that still has pods:
// unlike Kubernetes, deletion does not cascade, so nothing is deleted by
// surprise. The store checks that in the same Raft entry as the delete, and
// creates check that their namespace exists the same way, so a pod cannot be
// created into a namespace as it goes. The default namespace cannot be
// deleted. (It needs nothing of the backend any more; the parameter stays
// for server.go until that file next changes.)
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
				err:   connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("namespace %q still has pod(s); delete them first", name)),
			}, {
				// A service holds a cluster IP (and node ports) that only
				// its deletion frees.
				guard: store.IfNoneUnder(prefix(kinds.Service, name)),
				err:   connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("namespace %q still has service(s); delete them first", name)),
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
