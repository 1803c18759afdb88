package apiserver

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
	"skiff.dev/skiff/control/api/selector"
	"skiff.dev/skiff/control/store"
)

// strategy is what one kind adds to the generic machinery below: its
// validation, defaults and rules. Every field may be nil.
type strategy struct {
	// nameRule checks metadata.name; RFC 1123 subdomain when nil.
	nameRule func(fe *fieldErrors, path, name string)
	// validate reports every problem with an object about to be written,
	// spec and status alike.
	validate func(obj kinds.Object) fieldErrors
	// defaults fills in what the user may leave out, on create and update.
	defaults func(obj kinds.Object)
	// initial sets the status of a new object.
	initial func(obj kinds.Object)
	// checkUpdate rejects changes to fields that may not change.
	checkUpdate func(old, obj kinds.Object) fieldErrors
	// gracePeriod is the grace a deletion gets when the request names
	// none; 0 when nil.
	gracePeriod func(obj kinds.Object) int64
	// awaitsNode reports whether a deletion must wait for a node to stop
	// the object (a bound pod whose node exists).
	awaitsNode func(ctx context.Context, obj kinds.Object) (bool, error)
	// canDelete refuses a deletion for a reason of the object alone (the
	// default namespace).
	canDelete func(ctx context.Context, obj kinds.Object) error
	// deleteRules are the rules spanning objects that removing obj, or
	// marking it for removal, must keep (a namespace holds no pods).
	deleteRules func(obj kinds.Object) []rule
	// onDelete, when set, readies an object for its deletion before it is
	// first marked: it adds the finalizers of the parties that must act
	// first (a namespace's "kubernetes", for the namespace controller that
	// empties it) and may change its status. The deleteRules of such a
	// kind hold at the final removal alone: marking is what starts the
	// emptying they wait for.
	onDelete func(obj kinds.Object)
	// onCreate, when set, changes a new object after its defaults, as a
	// mutating admission plugin (a pod's default tolerations).
	onCreate func(obj kinds.Object)
	// onUpdate, when set, puts back on obj what onCreate added to old and
	// the update leaves out, as the patch of kubectl apply would keep it:
	// applying a manifest again is not a change.
	onUpdate func(old, obj kinds.Object)
	// claimer, when set, is what the object claims beyond its own key (a
	// cluster IP, node ports, a pod CIDR); claims.go.
	claimer *claimer
	// generation keeps metadata.generation, as Kubernetes does for kinds
	// whose controllers report an observedGeneration: 1 on create, one
	// more each time an update changes the spec.
	generation bool
}

// rule is a condition spanning objects that a write must keep. The store
// checks its guard in the same Raft entry as the write (ARCHITECTURE.md
// rule 9), so no other write comes between check and write; err is what the
// client reads when the guard fails.
type rule struct {
	guard store.Guard
	err   error
}

// backend is the generic half of the API server: create, get, list,
// update, delete and watch for every kind, over the store. It implements
// kinds.Backend.
type backend struct {
	store      Store
	now        func() time.Time
	strategies map[*kinds.Kind]*strategy
	// bookmarkInterval is how often a watch that allows bookmarks gets
	// one (defaultBookmarkInterval when 0); shortened in tests.
	bookmarkInterval time.Duration
	// decoded decodes each stored value once for every watch.
	decoded decodedCache
	// events builds and encodes each watch event once for every watch.
	events kinds.WatchEvents
	// auth applies the rules that depend on the stored object (the node a
	// pod is bound to); nil when the server runs without authentication.
	auth *authorizer
	// tolerations are the default tolerations new pods get.
	tolerations Tolerations
}

// admit applies auth's rules on the stored object (nil on create) and the
// object about to be written (nil for get and delete); see
// authorizer.admitStored.
func (b *backend) admit(ctx context.Context, verb string, k *kinds.Kind, stored, obj kinds.Object) error {
	return b.auth.admitStored(ctx, verb, k, stored, obj)
}

// WatchEvents implements kinds.EventSharer.
func (b *backend) WatchEvents() *kinds.WatchEvents { return &b.events }

// defaultBookmarkInterval is how often a watch that allows bookmarks is
// told how far it has gone.
const defaultBookmarkInterval = time.Minute

var (
	_ kinds.Backend     = (*backend)(nil)
	_ kinds.EventSharer = (*backend)(nil)
)

// maxConflictRetries bounds how often a server-side read-modify-write
// (Bind, UpdateStatus without a resourceVersion) retries a conflict.
const maxConflictRetries = 8

func (b *backend) strategy(k *kinds.Kind) *strategy {
	if s := b.strategies[k]; s != nil {
		return s
	}
	return &strategy{}
}

func key(k *kinds.Kind, ns, name string) string {
	if k.Namespaced {
		return "/" + k.Plural + "/" + ns + "/" + name
	}
	return "/" + k.Plural + "/" + name
}

// prefix selects every object of the kind, or of one namespace when ns is set.
func prefix(k *kinds.Kind, ns string) string {
	if k.Namespaced && ns != "" {
		return "/" + k.Plural + "/" + ns + "/"
	}
	return "/" + k.Plural + "/"
}

func namespaceOf(k *kinds.Kind, ns string) string {
	if !k.Namespaced {
		return ""
	}
	if ns == "" {
		return DefaultNamespace
	}
	return ns
}

// decode reads a stored value; the resourceVersion is the store's revision
// of the key, never a stored field.
func decode(k *kinds.Kind, kv store.KV) (kinds.Object, error) {
	obj := k.New()
	if err := proto.Unmarshal(kv.Value, obj); err != nil {
		return nil, fmt.Errorf("decode %s %s: %w", k.Singular, kv.Key, err)
	}
	obj.GetMetadata().ResourceVersion = kv.ModRevision
	return obj, nil
}

func encode(obj kinds.Object) ([]byte, error) {
	obj = proto.Clone(obj).(kinds.Object)
	obj.GetMetadata().ResourceVersion = 0
	return proto.MarshalOptions{Deterministic: true}.Marshal(obj)
}

func cloneObj(obj kinds.Object) kinds.Object { return proto.Clone(obj).(kinds.Object) }

func (b *backend) Create(ctx context.Context, k *kinds.Kind, obj kinds.Object, dryRun bool) (kinds.Object, error) {
	if obj == nil || obj.GetMetadata() == nil {
		return nil, fieldErrors{"metadata: required value"}.err(k.Singular, "")
	}
	s := b.strategy(k)
	obj = cloneObj(obj)
	m := obj.GetMetadata()
	if k.Namespaced && m.Namespace == "" {
		m.Namespace = DefaultNamespace
	}
	if m.ResourceVersion != 0 {
		return nil, fieldErrors{"metadata.resourceVersion: must not be set on create"}.err(k.Singular, m.GetName())
	}
	// Server-owned metadata: never taken from a client on create.
	m.DeletionTimestamp, m.DeletionGracePeriodSeconds = nil, nil
	if s.defaults != nil {
		s.defaults(obj)
	}
	if s.onCreate != nil {
		s.onCreate(obj)
	}
	if s.initial != nil {
		s.initial(obj)
	}
	m.Uid = newUID()
	m.CreationTimestamp = timestamppb.New(b.now())
	if s.generation {
		m.Generation = 1
	}
	if err := b.admit(ctx, "create", k, nil, obj); err != nil {
		return nil, err
	}
	if err := b.validate(k, obj); err != nil {
		return nil, err
	}
	var rules []rule
	if k.Namespaced {
		r, err := b.namespaceOpen(ctx, k, m.Namespace, m.Name)
		if err != nil {
			return nil, err
		}
		rules = append(rules, r)
	}
	if dryRun {
		_, crules, err := b.claims(ctx, k, nil, obj, true, nil)
		if err != nil {
			return nil, err
		}
		return obj, b.check(ctx, append(rules, crules...))
	}
	lost := map[string]bool{}
	base := obj
	for try := 0; ; try++ {
		obj := cloneObj(base) // what claims fills in, afresh on each try
		m := obj.GetMetadata()
		cops, crules, err := b.claims(ctx, k, nil, obj, false, lost)
		if err != nil {
			return nil, err
		}
		val, err := encode(obj)
		if err != nil {
			return nil, toConnect(err)
		}
		ops := append([]store.Op{store.CreateOp(key(k, m.Namespace, m.Name), val)}, cops...)
		kv, err := b.commit(ctx, "create", k, m.Namespace, m.Name, ops, append(slices.Clip(rules), crules...))
		if errors.Is(err, errNamespaceChanged) && try < maxConflictRetries {
			// The namespace changed since it was read: perhaps it is
			// being deleted now. Read it again.
			if rules[0], err = b.namespaceOpen(ctx, k, m.Namespace, m.Name); err != nil {
				return nil, err
			}
			continue
		}
		retry, err := retryClaims(err, lost, try, "create", k, k.ID(m.Namespace, m.Name))
		if retry {
			continue
		}
		if err != nil {
			return nil, err
		}
		m.ResourceVersion = kv.ModRevision
		return obj, nil
	}
}

// namespaceExists is the rule that an object is created only in a
// namespace that exists; NotFound otherwise.
func namespaceExists(ns string) rule {
	return rule{
		guard: store.IfPresent(key(kinds.Namespace, "", ns)),
		err:   connect.NewError(connect.CodeNotFound, fmt.Errorf("namespace %q not found", ns)),
	}
}

// errNamespaceChanged is namespaceOpen's rule's error: the namespace was
// written between its read and the create, which reads it again.
var errNamespaceChanged = connect.NewError(connect.CodeAborted, errors.New("the namespace changed during the create; try again"))

// namespaceOpen returns the rule that an object of kind k named name is
// created in namespace ns only while ns exists and is not being deleted,
// as Kubernetes' NamespaceLifecycle admission: a namespace being deleted
// refuses new content (Forbidden), except events, which tell of the
// deletion itself. The rule is that the namespace is still the version
// read, so a create racing the namespace's deletion is refused or read
// again, never let in behind the namespace controller's back.
func (b *backend) namespaceOpen(ctx context.Context, k *kinds.Kind, ns, name string) (rule, error) {
	obj, err := b.get(ctx, kinds.Namespace, "", ns)
	if connect.CodeOf(err) == connect.CodeNotFound {
		return namespaceExists(ns), nil // the store decides: this server may lag
	}
	if err != nil {
		return rule{}, err
	}
	m := obj.GetMetadata()
	if m.GetDeletionTimestamp() != nil && k != kinds.Event {
		return rule{}, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s %q is forbidden: unable to create new content in namespace %s because it is being terminated", k.Plural, name, ns))
	}
	if k == kinds.Event {
		return namespaceExists(ns), nil
	}
	return rule{guard: store.IfModRevision(key(kinds.Namespace, "", ns), m.GetResourceVersion()), err: errNamespaceChanged}, nil
}

// commit makes one write (ops[0], to the object ns/name of kind k, and the
// rest to its claims) under rules, in one store Txn, and returns what ops[0]
// left. A broken rule answers with its error; any other failure as
// objectErr words it for the verb.
func (b *backend) commit(ctx context.Context, verb string, k *kinds.Kind, ns, name string, ops []store.Op, rules []rule) (store.KV, error) {
	t := store.Txn{Ops: ops}
	for _, r := range rules {
		t.Guards = append(t.Guards, r.guard)
	}
	res, err := b.store.Txn(ctx, t)
	if err != nil {
		if rerr := ruleErr(err, rules); rerr != nil {
			return store.KV{}, rerr
		}
		return store.KV{}, objectErr(verb, k.Singular, k.ID(ns, name), err)
	}
	return res.KVs[0], nil
}

// check evaluates rules without writing, for a dry run.
func (b *backend) check(ctx context.Context, rules []rule) error {
	if len(rules) == 0 {
		return nil
	}
	guards := make([]store.Guard, len(rules))
	for i, r := range rules {
		guards[i] = r.guard
	}
	err := b.store.Check(ctx, guards)
	if rerr := ruleErr(err, rules); rerr != nil {
		return rerr
	}
	return toConnect(err)
}

// ruleErr returns the error of the rule whose guard err reports failed,
// or nil if err is not a guard failure.
func ruleErr(err error, rules []rule) error {
	var ge *store.GuardError
	if errors.As(err, &ge) && ge.Index < len(rules) {
		return rules[ge.Index].err
	}
	return nil
}

func (b *backend) validate(k *kinds.Kind, obj kinds.Object) error {
	s := b.strategy(k)
	fe := fieldErrors{}
	if err := checkObjectSize(obj); err != nil {
		fe = append(fe, err.Error())
	}
	rule := s.nameRule
	if rule == nil {
		rule = validateSubdomain
	}
	validateMeta(&fe, obj.GetMetadata(), k.Namespaced, rule)
	if s.validate != nil {
		fe = append(fe, s.validate(obj)...)
	}
	return fe.err(k.Singular, obj.GetMetadata().GetName())
}

func (b *backend) Get(ctx context.Context, k *kinds.Kind, req *skiffv1.GetRequest) (kinds.Object, error) {
	obj, err := b.get(ctx, k, req.GetNamespace(), req.GetName())
	if err != nil {
		return nil, err
	}
	if err := b.admit(ctx, "get", k, obj, nil); err != nil {
		return nil, err
	}
	return obj, nil
}

func (b *backend) get(ctx context.Context, k *kinds.Kind, ns, name string) (kinds.Object, error) {
	if name == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("name required: get %s needs the name of the %s", k.Singular, k.Singular))
	}
	ns = namespaceOf(k, ns)
	kv, err := b.store.Get(ctx, key(k, ns, name))
	if err != nil {
		return nil, objectErr("get", k.Singular, k.ID(ns, name), err)
	}
	obj, err := decode(k, kv)
	return obj, toConnect(err)
}

// filter is a parsed label and field selector.
type filter struct {
	labels selector.Labels
	fields selector.Fields
}

func parseFilter(k *kinds.Kind, labels, fields string) (*filter, error) {
	f := &filter{}
	var err error
	if f.labels, err = selector.ParseLabels(labels); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if f.fields, err = selector.ParseFields(fields, k.FieldNames()); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if f.labels.Empty() && f.fields.Empty() {
		return nil, nil
	}
	return f, nil
}

func (f *filter) keep(k *kinds.Kind) func(kinds.Object) bool {
	if f == nil {
		return nil
	}
	return func(o kinds.Object) bool {
		return f.labels.Matches(o.GetMetadata().GetLabels()) &&
			f.fields.Matches(func(field string) string { return k.Fields[field](o) })
	}
}

func (b *backend) List(ctx context.Context, k *kinds.Kind, req *skiffv1.ListRequest) ([]kinds.Object, uint64, error) {
	f, err := parseFilter(k, req.GetLabelSelector(), req.GetFieldSelector())
	if err != nil {
		return nil, 0, err
	}
	return b.list(ctx, k, req.GetNamespace(), f.keep(k))
}

func (b *backend) list(ctx context.Context, k *kinds.Kind, ns string, keep func(kinds.Object) bool) ([]kinds.Object, uint64, error) {
	kvs, rev, err := b.store.List(ctx, prefix(k, ns))
	if err != nil {
		return nil, 0, toConnect(fmt.Errorf("list %s: %w", k.Plural, err))
	}
	out := make([]kinds.Object, 0, len(kvs))
	for _, kv := range kvs {
		obj, err := decode(k, kv)
		if err != nil {
			return nil, 0, toConnect(err)
		}
		if keep == nil || keep(obj) {
			out = append(out, obj)
		}
	}
	return out, rev, nil
}

// Update replaces an object's metadata and spec. A non-zero
// metadata.resourceVersion makes it a compare-and-swap: a stale version
// gets Aborted (conflict). uid, creationTimestamp, the deletion fields and
// the status (which has its own call) always come from the stored object.
func (b *backend) Update(ctx context.Context, k *kinds.Kind, obj kinds.Object, dryRun bool) (kinds.Object, error) {
	if obj == nil || obj.GetMetadata() == nil {
		return nil, fieldErrors{"metadata: required value"}.err(k.Singular, "")
	}
	s := b.strategy(k)
	obj = cloneObj(obj)
	m := obj.GetMetadata()
	m.Namespace = namespaceOf(k, m.Namespace)
	old, err := b.get(ctx, k, m.Namespace, m.Name)
	if err != nil {
		return nil, err
	}
	om := old.GetMetadata()
	if err := b.admit(ctx, "update", k, old, obj); err != nil {
		return nil, err
	}
	if err := checkVersion("update", k, om, m.ResourceVersion); err != nil {
		return nil, err
	}
	if m.Uid != "" && m.Uid != om.Uid {
		return nil, fieldErrors{fmt.Sprintf("metadata.uid: field is immutable (is %q)", om.Uid)}.err(k.Singular, m.Name)
	}
	m.Uid, m.CreationTimestamp = om.Uid, om.CreationTimestamp
	m.DeletionTimestamp, m.DeletionGracePeriodSeconds = om.DeletionTimestamp, om.DeletionGracePeriodSeconds
	copyStatus(old, obj)
	if om.DeletionTimestamp != nil {
		if added := newFinalizers(om.Finalizers, m.Finalizers); len(added) > 0 {
			return nil, fieldErrors{fmt.Sprintf("metadata.finalizers: Forbidden: no new finalizers can be added while the object is being deleted (%s)", strings.Join(added, ", "))}.err(k.Singular, m.Name)
		}
	}
	if s.onUpdate != nil {
		s.onUpdate(old, obj)
	}
	if s.defaults != nil {
		s.defaults(obj)
	}
	if s.generation {
		m.Generation = om.Generation
		if !sameSpec(old, obj) {
			m.Generation++
		}
	}
	if err := b.validate(k, obj); err != nil {
		return nil, err
	}
	if s.checkUpdate != nil {
		if err := s.checkUpdate(old, obj).err(k.Singular, m.Name); err != nil {
			return nil, err
		}
	}
	if dryRun {
		_, crules, err := b.claims(ctx, k, old, obj, true, nil)
		if err == nil {
			err = b.check(ctx, crules)
		}
		m.ResourceVersion = om.ResourceVersion
		return obj, err
	}
	// The last finalizer of an object whose grace has run out is gone:
	// the object goes with this write.
	if m.DeletionTimestamp != nil && len(m.Finalizers) == 0 && m.GetDeletionGracePeriodSeconds() == 0 {
		return b.remove(ctx, k, old)
	}
	lost := map[string]bool{}
	base := obj
	for try := 0; ; try++ {
		obj := cloneObj(base)
		out, err := b.writeClaiming(ctx, k, old, obj, om.ResourceVersion, nil, lost)
		retry, err := retryClaims(err, lost, try, "update", k, k.ID(m.Namespace, m.Name))
		if retry {
			continue
		}
		return out, err
	}
}

// write stores obj over the version rev, under rules, with more ops (its
// claims) in the same Txn.
func (b *backend) write(ctx context.Context, k *kinds.Kind, obj kinds.Object, rev uint64, rules []rule, more ...store.Op) (kinds.Object, error) {
	m := obj.GetMetadata()
	val, err := encode(obj)
	if err != nil {
		return nil, toConnect(err)
	}
	ops := append([]store.Op{store.UpdateOp(key(k, m.Namespace, m.Name), val, rev)}, more...)
	kv, err := b.commit(ctx, "update", k, m.Namespace, m.Name, ops, rules)
	if err != nil {
		return nil, err
	}
	m.ResourceVersion = kv.ModRevision
	return obj, nil
}

func checkVersion(verb string, k *kinds.Kind, stored *skiffv1.ObjectMeta, want uint64) error {
	if want != 0 && want != stored.ResourceVersion {
		return connect.NewError(connect.CodeAborted, fmt.Errorf(
			"%s %s %q: %w: the object has been modified (resourceVersion %d, yours %d); get it and try again",
			verb, k.Singular, k.ID(stored.Namespace, stored.Name), store.ErrConflict, stored.ResourceVersion, want))
	}
	return nil
}

func newFinalizers(old, now []string) []string {
	had := map[string]bool{}
	for _, f := range old {
		had[f] = true
	}
	var out []string
	for _, f := range now {
		if !had[f] {
			out = append(out, f)
		}
	}
	return out
}

// statusField is the message's "status" field, nil for a kind without one.
func statusField(obj kinds.Object) protoreflect.FieldDescriptor {
	return obj.ProtoReflect().Descriptor().Fields().ByName("status")
}

// sameSpec reports whether a and b have equal specs.
func sameSpec(a, b kinds.Object) bool {
	fd := a.ProtoReflect().Descriptor().Fields().ByName("spec")
	if fd == nil {
		return true
	}
	return proto.Equal(a.ProtoReflect().Get(fd).Message().Interface(), b.ProtoReflect().Get(fd).Message().Interface())
}

// copyStatus puts from's status onto to.
func copyStatus(from, to kinds.Object) {
	fd := statusField(to)
	if fd == nil {
		return
	}
	src := from.ProtoReflect()
	if !src.Has(fd) {
		to.ProtoReflect().Clear(fd)
		return
	}
	to.ProtoReflect().Set(fd, protoreflect.ValueOfMessage(proto.Clone(src.Get(fd).Message().Interface()).ProtoReflect()))
}

// updateStatus replaces the status of the stored object with obj's, as
// Kubernetes' status subresource: nothing else changes. With a
// resourceVersion it is a compare-and-swap; without one it applies to the
// newest version, retrying a conflicting write.
func (b *backend) updateStatus(ctx context.Context, k *kinds.Kind, obj kinds.Object, dryRun bool) (kinds.Object, error) {
	if obj == nil || obj.GetMetadata() == nil {
		return nil, fieldErrors{"metadata: required value"}.err(k.Singular, "")
	}
	obj = cloneObj(obj)
	m := obj.GetMetadata()
	return b.modify(ctx, k, namespaceOf(k, m.Namespace), m.Name, m.Uid, m.ResourceVersion, dryRun, func(cur kinds.Object) error {
		if err := b.admit(ctx, "updatestatus", k, cur, obj); err != nil {
			return err
		}
		copyStatus(obj, cur)
		return nil
	})
}

// modify reads the object, applies change to it, validates and writes it
// back as a compare-and-swap. When the caller named no resourceVersion, a
// conflict means someone else wrote in between: read again and retry.
func (b *backend) modify(ctx context.Context, k *kinds.Kind, ns, name, uid string, rev uint64, dryRun bool, change func(cur kinds.Object) error) (kinds.Object, error) {
	lost := map[string]bool{}
	for try := 0; ; try++ {
		cur, err := b.get(ctx, k, ns, name)
		if err != nil {
			return nil, err
		}
		old := cloneObj(cur)
		// What the stored object was, before change edits it: the caller's
		// preconditions are checked against it, but only once change has
		// admitted the caller, so that a caller who may not write the object
		// learns nothing of it (a refusal comes before a conflict).
		cm := proto.Clone(cur.GetMetadata()).(*skiffv1.ObjectMeta)
		stored := cm.ResourceVersion
		if err := change(cur); err != nil {
			return nil, err
		}
		if uid != "" && uid != cm.Uid {
			return nil, connect.NewError(connect.CodeAborted, fmt.Errorf("%s %q: the object was replaced (uid %s, yours %s)", k.Singular, k.ID(ns, name), cm.Uid, uid))
		}
		if err := checkVersion("update", k, cm, rev); err != nil {
			return nil, err
		}
		if err := b.validate(k, cur); err != nil {
			return nil, err
		}
		if dryRun {
			return cur, nil
		}
		// A claim the object lacks (a node's pod CIDR, for a node
		// registered before pod CIDRs were allocated) is made here too.
		out, err := b.writeClaiming(ctx, k, old, cur, stored, nil, lost)
		retry, err := retryClaims(err, lost, try, "update", k, k.ID(ns, name))
		if retry {
			continue
		}
		if connect.CodeOf(err) == connect.CodeAborted && rev == 0 && try < maxConflictRetries {
			continue
		}
		return out, err
	}
}

// Delete removes an object, or marks it for deletion when it must wait:
// for finalizers, or for its node to stop it (a bound pod). A marked
// object carries deletionTimestamp (when its grace ends) and
// deletionGracePeriodSeconds; a second Delete may shorten the grace, and
// one with grace 0 (the node's confirmation, or --force) removes it once
// no finalizer remains.
func (b *backend) Delete(ctx context.Context, k *kinds.Kind, req *skiffv1.DeleteRequest, dryRun bool) (kinds.Object, error) {
	if req.GracePeriodSeconds != nil && req.GetGracePeriodSeconds() < 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("gracePeriodSeconds: invalid value %d: must not be negative", req.GetGracePeriodSeconds()))
	}
	s := b.strategy(k)
	for try := 0; ; try++ {
		obj, err := b.get(ctx, k, req.GetNamespace(), req.GetName())
		if err != nil {
			return nil, err
		}
		if err := b.admit(ctx, "delete", k, obj, nil); err != nil {
			return nil, err
		}
		m := obj.GetMetadata()
		if req.GetUid() != "" && req.GetUid() != m.Uid {
			return nil, connect.NewError(connect.CodeAborted, fmt.Errorf("delete %s %q: the object was replaced (uid %s, yours %s)", k.Singular, k.ID(m.Namespace, m.Name), m.Uid, req.GetUid()))
		}
		if err := checkVersion("delete", k, m, req.GetResourceVersion()); err != nil {
			return nil, err
		}
		if s.canDelete != nil {
			if err := s.canDelete(ctx, obj); err != nil {
				return nil, err
			}
		}
		rules := b.deleteRules(k, obj)
		if s.onDelete != nil && m.DeletionTimestamp == nil {
			s.onDelete(obj)
			if len(m.Finalizers) > 0 {
				rules = nil // they hold at the final removal
			}
		}
		grace := int64(0)
		if req.GracePeriodSeconds != nil {
			grace = req.GetGracePeriodSeconds()
		} else if s.gracePeriod != nil {
			grace = s.gracePeriod(obj)
		}
		wait := false
		if grace > 0 && s.awaitsNode != nil {
			if wait, err = s.awaitsNode(ctx, obj); err != nil {
				return nil, err
			}
		}
		if !wait {
			grace = 0
		}
		if len(m.Finalizers) == 0 && grace == 0 {
			if dryRun {
				return obj, b.check(ctx, rules)
			}
			out, err := b.remove(ctx, k, obj)
			if connect.CodeOf(err) == connect.CodeAborted && req.GetResourceVersion() == 0 && try < maxConflictRetries {
				continue
			}
			return out, err
		}
		if m.DeletionTimestamp != nil && m.GetDeletionGracePeriodSeconds() <= grace {
			return obj, nil // already marked with a grace no longer than this
		}
		rev := m.ResourceVersion
		m.DeletionGracePeriodSeconds = proto.Int64(grace)
		m.DeletionTimestamp = timestamppb.New(b.now().Add(time.Duration(grace) * time.Second))
		if dryRun {
			return obj, b.check(ctx, rules)
		}
		// Marking keeps the deletion's rules too, so an object is not left
		// waiting for a removal that its rules would refuse.
		out, err := b.write(ctx, k, obj, rev, rules)
		if connect.CodeOf(err) == connect.CodeAborted && req.GetResourceVersion() == 0 && try < maxConflictRetries {
			continue
		}
		return out, err
	}
}

// remove deletes the stored object at its version, under the kind's
// deletion rules.
func (b *backend) remove(ctx context.Context, k *kinds.Kind, obj kinds.Object) (kinds.Object, error) {
	m := obj.GetMetadata()
	rel, err := b.release(ctx, k, obj)
	if err != nil {
		return nil, err
	}
	ops := append([]store.Op{store.DeleteOp(key(k, m.Namespace, m.Name), m.ResourceVersion)}, rel...)
	kv, err := b.commit(ctx, "delete", k, m.Namespace, m.Name, ops, b.deleteRules(k, obj))
	if err != nil {
		return nil, err
	}
	out, err := decode(k, kv)
	return out, toConnect(err)
}

func (b *backend) deleteRules(k *kinds.Kind, obj kinds.Object) []rule {
	if s := b.strategy(k); s.deleteRules != nil {
		return s.deleteRules(obj)
	}
	return nil
}

// newUID returns a random RFC 4122 version 4 UUID.
func newUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := fmt.Sprintf("%x", b[:])
	return strings.Join([]string{h[0:8], h[8:12], h[12:16], h[16:20], h[20:32]}, "-")
}
