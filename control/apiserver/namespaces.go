package apiserver

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

// DefaultNamespace is where objects go when their manifest names none.
const DefaultNamespace = "default"

// namespaceStrategy refuses to delete a namespace that still has pods:
// unlike Kubernetes, deletion does not cascade, so nothing is deleted by
// surprise. The default namespace cannot be deleted.
func namespaceStrategy(b *backend) *strategy {
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
		canDelete: func(ctx context.Context, o kinds.Object) error {
			name := o.GetMetadata().GetName()
			if name == DefaultNamespace {
				return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("namespace %q cannot be deleted", name))
			}
			pods, _, err := b.list(ctx, kinds.Pod, name, nil)
			if err != nil {
				return err
			}
			if len(pods) > 0 {
				return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("namespace %q still has %d pod(s); delete them first", name, len(pods)))
			}
			return nil
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
