package apiserver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
	"skiff.dev/skiff/control/store"
)

// maxBindBatch is how many bindings one BindBatch may carry: they are
// written in one store Txn.
const maxBindBatch = store.MaxTxnOps

// Bind sets an unbound pod's spec.nodeName and its PodScheduled condition.
// A pod is bound once: binding a bound pod is FailedPrecondition.
func (s *podService) Bind(ctx context.Context, req *connect.Request[skiffv1.BindRequest]) (*connect.Response[skiffv1.Pod], error) {
	r := req.Msg
	if err := checkBinding(r); err != nil {
		return nil, err
	}
	ns := namespaceOf(kinds.Pod, r.GetNamespace())
	o, err := s.b.modify(ctx, kinds.Pod, ns, r.GetName(), r.GetUid(), r.GetResourceVersion(), kinds.DryRun(req.Header()), func(cur kinds.Object) error {
		return bindPod(cur.(*skiffv1.Pod), ns, r.GetNodeName(), s.b.now())
	})
	return respondObj[skiffv1.Pod](o, err)
}

// checkBinding checks what a binding says before any pod is read.
func checkBinding(r *skiffv1.BindRequest) error {
	fe := fieldErrors{}
	validateSubdomain(&fe, "nodeName", r.GetNodeName())
	return fe.err("binding of pod", r.GetName())
}

// bindPod binds the stored pod p, of namespace ns, to node, unless it is
// being deleted or is bound already (FailedPrecondition).
func bindPod(p *skiffv1.Pod, ns, node string, now time.Time) error {
	id := kinds.Pod.ID(ns, p.GetMetadata().GetName())
	if p.GetMetadata().GetDeletionTimestamp() != nil {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("pod %q is being deleted", id))
	}
	if n := p.GetSpec().GetNodeName(); n != "" {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("pod %q is already bound to node %q", id, n))
	}
	p.Spec.NodeName = node
	setPodCondition(p, &skiffv1.Condition{Type: "PodScheduled", Status: "True"}, now)
	return nil
}

// BindBatch binds each pod of the batch as Bind would, with the same
// checks, and reports each outcome at its request's index. Every binding
// that holds is written in one store Txn: one Raft entry, whose events
// reach watches as one MODIFIED event a pod. Each item is checked against
// the pod read from the store and written only over that version; if
// another write came in between, that item alone is read and checked
// again (at most maxConflictRetries times) and the rest written without it.
func (s *podService) BindBatch(ctx context.Context, req *connect.Request[skiffv1.BindBatchRequest]) (*connect.Response[skiffv1.BindBatchResponse], error) {
	bs := req.Msg.GetBindings()
	if len(bs) > maxBindBatch {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("bindings: %d items, more than the %d one BindBatch may carry; split the batch", len(bs), maxBindBatch))
	}
	dryRun := kinds.DryRun(req.Header())
	results := make([]*skiffv1.BindResult, len(bs))
	fail := func(i int, err error) {
		results[i] = &skiffv1.BindResult{Code: connect.CodeOf(err).String(), Message: connectMessage(err)}
	}
	// ops[j] writes the binding bs[at[j]].
	var ops []store.Op
	var at []int
	first := make(map[string]int, len(bs)) // pod key -> first binding of it
	tries := make([]int, len(bs))
	for i, r := range bs {
		k := key(kinds.Pod, namespaceOf(kinds.Pod, r.GetNamespace()), r.GetName())
		if j, dup := first[k]; dup {
			fail(i, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("bindings[%d]: pod %q is bound by bindings[%d] of the same batch", i, kinds.Pod.ID(namespaceOf(kinds.Pod, r.GetNamespace()), r.GetName()), j)))
			continue
		}
		first[k] = i
		op, rev, err := s.prepareBind(ctx, r)
		switch {
		case err != nil:
			fail(i, err)
		case dryRun:
			results[i] = &skiffv1.BindResult{ResourceVersion: rev}
		default:
			ops, at = append(ops, op), append(at, i)
		}
	}
	for len(ops) > 0 {
		res, err := s.b.store.Txn(ctx, store.Txn{Ops: ops})
		if err == nil {
			for j, i := range at {
				results[i] = &skiffv1.BindResult{ResourceVersion: res.KVs[j].ModRevision}
			}
			break
		}
		var oe *store.OpError
		if !errors.As(err, &oe) || oe.Index >= len(ops) {
			// The Txn as a whole did not happen (not the leader, closed)
			// or may have: every binding in it shares that outcome.
			for _, i := range at {
				r := bs[i]
				fail(i, objectErr("bind", kinds.Pod.Singular, kinds.Pod.ID(namespaceOf(kinds.Pod, r.GetNamespace()), r.GetName()), err))
			}
			break
		}
		// One pod changed since it was read: read it again, and write
		// the rest with it or without it.
		j, i := oe.Index, at[oe.Index]
		r := bs[i]
		tries[i]++
		op, _, perr := s.prepareBind(ctx, r)
		switch {
		case perr != nil:
			fail(i, perr)
		case tries[i] > maxConflictRetries || r.GetResourceVersion() != 0:
			fail(i, objectErr("bind", kinds.Pod.Singular, kinds.Pod.ID(namespaceOf(kinds.Pod, r.GetNamespace()), r.GetName()), oe.Err))
		default:
			ops[j] = op
			continue
		}
		ops, at = append(ops[:j], ops[j+1:]...), append(at[:j], at[j+1:]...)
	}
	return connect.NewResponse(&skiffv1.BindBatchResponse{Results: results}), nil
}

// prepareBind reads the pod a binding names and checks it as Bind does:
// the binding itself, then the pod (not being deleted, not bound), its uid
// and resourceVersion when given, and the bound pod's validity. It returns
// the write of the bound pod over the version read, and that version.
func (s *podService) prepareBind(ctx context.Context, r *skiffv1.BindRequest) (store.Op, uint64, error) {
	if err := checkBinding(r); err != nil {
		return store.Op{}, 0, err
	}
	ns := namespaceOf(kinds.Pod, r.GetNamespace())
	obj, err := s.b.get(ctx, kinds.Pod, ns, r.GetName())
	if err != nil {
		return store.Op{}, 0, err
	}
	p := obj.(*skiffv1.Pod)
	m := p.GetMetadata()
	if err := bindPod(p, ns, r.GetNodeName(), s.b.now()); err != nil {
		return store.Op{}, 0, err
	}
	if r.GetUid() != "" && r.GetUid() != m.GetUid() {
		return store.Op{}, 0, connect.NewError(connect.CodeAborted, fmt.Errorf("%s %q: the object was replaced (uid %s, yours %s)", kinds.Pod.Singular, kinds.Pod.ID(ns, r.GetName()), m.GetUid(), r.GetUid()))
	}
	if err := checkVersion("update", kinds.Pod, m, r.GetResourceVersion()); err != nil {
		return store.Op{}, 0, err
	}
	if err := s.b.validate(kinds.Pod, p); err != nil {
		return store.Op{}, 0, err
	}
	val, err := encode(p)
	if err != nil {
		return store.Op{}, 0, toConnect(err)
	}
	return store.UpdateOp(key(kinds.Pod, ns, r.GetName()), val, m.GetResourceVersion()), m.GetResourceVersion(), nil
}
