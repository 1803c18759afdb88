package apiserver

// This file decides what an authenticated principal may do: a
// connect.Interceptor checks every call's (verb, kind, namespace, name)
// against the principal's role before the handler runs, and admitStored
// checks what depends on the stored object (the node a pod is bound to,
// status.agentEndpoint) inside the handler, against the version it writes.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
	"skiff.dev/skiff/control/api/selector"
)

// Roles a token may hold, as Kubernetes' view, edit and admin.
const (
	RoleView  = "view"
	RoleEdit  = "edit"
	RoleAdmin = "admin"
)

// Kinds that are not objects of the registry, as authorization names them.
const (
	kindCluster = "cluster" // ClusterService: members, snapshot
	kindTokens  = "tokens"  // AuthService's tokens
)

// attrs is what a call asks to do.
type attrs struct {
	verb string
	// kind is a registry kind's plural, kindCluster or kindTokens.
	kind string
	// ns is the namespace of a namespaced call; "" for a cluster-scoped
	// kind, or a list or watch of every namespace.
	ns   string
	name string
	// fields is a list or watch's field selector.
	fields string
}

// scope words where a call acts, for messages.
func (a attrs) scope() string {
	if a.ns == "" {
		return "at the cluster scope"
	}
	return "in namespace " + a.ns
}

// verbs maps a method of a kind's service to its verb.
var verbs = map[string]string{
	"Create": "create", "Get": "get", "List": "list", "Update": "update",
	"Delete": "delete", "Watch": "watch", "UpdateStatus": "updatestatus",
	"Bind": "bind", "BindBatch": "bind", "Logs": "logs", "StreamLogs": "logs",
	// Top reads pods' metrics: a list of the namespace's pods (every
	// namespace's with allNamespaces), as `kubectl top` needs.
	"Top": "list",
}

// serviceKinds maps each kind's service ("skiff.v1.PodService") to its kind.
var serviceKinds = func() map[string]*kinds.Kind {
	m := map[string]*kinds.Kind{}
	for _, k := range kinds.All() {
		m[string(k.New().ProtoReflect().Descriptor().FullName())+"Service"] = k
	}
	return m
}()

const (
	clusterServiceName = "skiff.v1.ClusterService"
	authServiceName    = "skiff.v1.AuthService"
)

// procedureWords names a procedure's verb and kind as well as the path
// alone tells, for the audit log of a call refused before it was read.
func procedureWords(procedure string) (verb, kind string) {
	service, method, _ := strings.Cut(strings.TrimPrefix(procedure, "/"), "/")
	if k, ok := serviceKinds[service]; ok {
		return verbs[method], k.Plural
	}
	switch service {
	case clusterServiceName:
		return strings.ToLower(method), kindCluster
	case authServiceName:
		return strings.ToLower(method), kindTokens
	}
	return method, service
}

// attrsOf derives what a call asks from its procedure and request message.
// open reports a call every authenticated principal may make (WhoAmI,
// CanI). A procedure it does not know is refused.
func attrsOf(procedure string, msg any, p Principal) (a attrs, open bool, err error) {
	service, method, _ := strings.Cut(strings.TrimPrefix(procedure, "/"), "/")
	if k, ok := serviceKinds[service]; ok {
		verb, ok := verbs[method]
		if !ok {
			return attrs{}, false, fmt.Errorf("unknown method %s", procedure)
		}
		a = attrs{verb: verb, kind: k.Plural}
		switch m := msg.(type) {
		case *skiffv1.GetRequest:
			a.ns, a.name = namespaceOf(k, m.GetNamespace()), m.GetName()
		case *skiffv1.DeleteRequest:
			a.ns, a.name = namespaceOf(k, m.GetNamespace()), m.GetName()
		case *skiffv1.ListRequest:
			a.ns, a.fields = m.GetNamespace(), m.GetFieldSelector()
		case *skiffv1.WatchRequest:
			a.ns, a.fields = m.GetNamespace(), m.GetFieldSelector()
		case *skiffv1.BindRequest:
			a.ns, a.name = namespaceOf(k, m.GetNamespace()), m.GetName()
		case *skiffv1.BindBatchRequest:
			// A batch may span namespaces: binding at the cluster scope.
			a.ns = ""
		case *skiffv1.PodLogsRequest:
			a.ns, a.name = namespaceOf(k, m.GetNamespace()), m.GetName()
		case *skiffv1.TopPodsRequest:
			a.ns = topNamespace(m)
		case kinds.Object:
			a.ns, a.name = namespaceOf(k, m.GetMetadata().GetNamespace()), m.GetMetadata().GetName()
		default:
			return attrs{}, false, fmt.Errorf("unexpected request %T for %s", msg, procedure)
		}
		if !k.Namespaced {
			a.ns = ""
		}
		return a, false, nil
	}
	switch service {
	case clusterServiceName:
		switch method {
		case "Members":
			return attrs{verb: "members", kind: kindCluster}, false, nil
		case "Snapshot":
			return attrs{verb: "snapshot", kind: kindCluster}, false, nil
		}
	case authServiceName:
		switch method {
		case "WhoAmI", "CanI":
			return attrs{verb: strings.ToLower(method), kind: kindTokens}, true, nil
		case "CreateToken":
			return attrs{verb: "create", kind: kindTokens, ns: msg.(*skiffv1.CreateTokenRequest).GetNamespace()}, false, nil
		case "ListTokens":
			return attrs{verb: "list", kind: kindTokens, ns: listTokensScope(p, msg.(*skiffv1.ListTokensRequest).GetNamespace())}, false, nil
		case "RevokeToken":
			// The token's namespace is known once it is read: the
			// handler checks it (revokeToken); here, that the caller
			// administers some scope.
			return attrs{verb: "delete", kind: kindTokens, ns: p.Namespace, name: msg.(*skiffv1.RevokeTokenRequest).GetId()}, false, nil
		}
	}
	return attrs{}, false, fmt.Errorf("unknown procedure %s", procedure)
}

// listTokensScope is the namespace a ListTokens call lists: the one asked
// for, else the caller's own (every token for a cluster-wide caller).
func listTokensScope(p Principal, ns string) string {
	if ns == "" && !p.Server && p.Node == "" {
		return p.Namespace
	}
	return ns
}

// authorize reports whether p may do a, and why not.
func authorize(p Principal, a attrs) (bool, string) {
	switch {
	case p.Server:
		return true, ""
	case p.Node != "":
		return authorizeNode(p, a)
	}
	return authorizeToken(p, a)
}

func denied(p Principal, a attrs) string {
	return fmt.Sprintf("%s cannot %s %s %s", p.Name, a.verb, a.kind, a.scope())
}

// authorizeToken applies a token's role in its scope.
func authorizeToken(p Principal, a attrs) (bool, string) {
	if p.Namespace != "" && a.ns != p.Namespace {
		// A namespaced token holds nothing outside its namespace: not
		// the cluster-scoped kinds, not a list of every namespace.
		return false, denied(p, a)
	}
	cluster := p.Namespace == ""
	var ok bool
	switch p.Role {
	case RoleAdmin:
		ok = cluster || roleAllows(RoleEdit, a, false) || a.kind == kindTokens && (a.verb == "create" || a.verb == "list" || a.verb == "delete")
	case RoleEdit, RoleView:
		ok = roleAllows(p.Role, a, cluster)
	}
	if !ok {
		return false, denied(p, a)
	}
	return true, ""
}

// roleAllows is the view and edit roles; cluster adds the cluster-scoped
// kinds.
func roleAllows(role string, a attrs, cluster bool) bool {
	read := a.verb == "get" || a.verb == "list" || a.verb == "watch"
	write := a.verb == "create" || a.verb == "update" || a.verb == "delete"
	switch a.kind {
	case kinds.Pod.Plural:
		// exec and portforward reach into a pod: edit, as Kubernetes'
		// edit role may create pods/exec and pods/portforward.
		stream := a.verb == "exec" || a.verb == "portforward"
		return read || a.verb == "logs" || role == RoleEdit && (write || stream)
	case kinds.Event.Plural, kinds.Service.Plural, kinds.Endpoints.Plural,
		kinds.Deployment.Plural, kinds.ReplicaSet.Plural:
		// Whoever may edit pods may edit what makes them, as in
		// Kubernetes' edit role.
		return read || role == RoleEdit && write
	case kinds.Node.Plural, kinds.Namespace.Plural:
		return cluster && (read || role == RoleEdit && write)
	case kindCluster:
		return cluster && a.verb == "members"
	}
	return false
}

// authorizeNode is Kubernetes' NodeRestriction: an agent reads and reports
// on its own Node and the pods bound to it, records events, and reads
// services, endpoints and the list of nodes. Which node
// a pod is bound to is checked against the stored pod (admitStored).
func authorizeNode(p Principal, a attrs) (bool, string) {
	switch a.kind {
	case kinds.Node.Plural:
		switch a.verb {
		case "list", "watch":
			// Every node routes to the others' pod CIDRs through
			// their addresses, as Kubernetes' node authorizer lets a
			// kubelet read all nodes.
			return true, ""
		case "create", "get", "updatestatus":
			if a.name == p.Node {
				return true, ""
			}
			return false, fmt.Sprintf("%s cannot %s node %q: a node may %s only its own Node %q", p.Name, a.verb, a.name, a.verb, p.Node)
		}
	case kinds.Pod.Plural:
		switch a.verb {
		case "list", "watch":
			want := "spec.nodeName=" + p.Node
			f, err := selector.ParseFields(a.fields, kinds.Pod.FieldNames())
			if err != nil || f.String() != want {
				return false, fmt.Sprintf("%s cannot %s pods without the field selector %s (got %q): a node sees only the pods bound to it", p.Name, a.verb, want, a.fields)
			}
			return true, ""
		case "get", "updatestatus", "delete":
			return true, "" // of a pod bound to it: admitStored
		}
	case kinds.Event.Plural:
		switch a.verb {
		case "create", "update", "get":
			return true, ""
		}
	case kinds.Service.Plural, kinds.Endpoints.Plural:
		// Every node's proxy programs every service, and its agent
		// gives pods the services' environment variables: a node reads
		// them all, and writes none.
		switch a.verb {
		case "get", "list", "watch":
			return true, ""
		}
	}
	return false, denied(p, a)
}

// auditRefusal logs a refused call: who, what and why, with stable keys.
func auditRefusal(log *slog.Logger, who string, a attrs, why, remote string) {
	log.Warn("audit: refused", "who", who, "verb", a.verb, "kind", a.kind, "ns", a.ns, "name", a.name, "why", why, "remote", remote)
}

// authorizer is the interceptor that authorizes every call, and the rules
// on stored objects its handlers call.
type authorizer struct {
	log *slog.Logger
}

// refuse logs and returns a PermissionDenied refusal of a for the caller
// of ctx.
func (z *authorizer) refuse(ctx context.Context, a attrs, why string) error {
	c, _ := callerFrom(ctx)
	auditRefusal(z.log, c.p.Name, a, why, c.remote)
	return connect.NewError(connect.CodePermissionDenied, errors.New(why))
}

// check authorizes the call of procedure with request msg.
func (z *authorizer) check(ctx context.Context, procedure string, msg any) error {
	c, ok := callerFrom(ctx)
	if !ok {
		// The authenticator puts a principal on every request it passes;
		// a call without one did not come through it.
		verb, kind := procedureWords(procedure)
		auditRefusal(z.log, "anonymous", attrs{verb: verb, kind: kind}, errNoCredentials.Error(), "")
		return connect.NewError(connect.CodeUnauthenticated, errNoCredentials)
	}
	a, open, err := attrsOf(procedure, msg, c.p)
	if err != nil {
		return z.refuse(ctx, a, err.Error())
	}
	if open {
		return nil
	}
	if ok, why := authorize(c.p, a); !ok {
		return z.refuse(ctx, a, why)
	}
	return nil
}

func (z *authorizer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := z.check(ctx, req.Spec().Procedure, req.Any()); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (z *authorizer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (z *authorizer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return next(ctx, &authorizedConn{StreamingHandlerConn: conn, ctx: ctx, z: z})
	}
}

// authorizedConn authorizes a stream on its first message, before the
// handler sees it.
type authorizedConn struct {
	connect.StreamingHandlerConn
	ctx     context.Context
	z       *authorizer
	checked bool
}

func (c *authorizedConn) Receive(msg any) error {
	if err := c.StreamingHandlerConn.Receive(msg); err != nil {
		return err
	}
	if !c.checked {
		c.checked = true
		return c.z.check(c.ctx, c.Spec().Procedure, msg)
	}
	return nil
}

// agentEndpointRefusal is the rule that only a node's own agent sets where
// its API is: else an admin could point the server's log calls anywhere.
const agentEndpointRefusal = "status.agentEndpoint: set only by the node's agent, from its certificate"

// admitStored applies the rules that depend on the stored object to a call
// of verb on kind k: stored is the object as stored (nil on create), obj
// the object about to be written (nil for get and delete), which it may
// change. The handler calls it with the version it writes over, so no
// write comes between the check and the write. Without a principal (a
// server built without Auth) it allows everything.
func (z *authorizer) admitStored(ctx context.Context, verb string, k *kinds.Kind, stored, obj kinds.Object) error {
	if z == nil {
		return nil
	}
	c, ok := callerFrom(ctx)
	if !ok {
		return nil
	}
	p := c.p
	ref := stored
	if ref == nil {
		ref = obj
	}
	a := attrs{verb: verb, kind: k.Plural, ns: ref.GetMetadata().GetNamespace(), name: ref.GetMetadata().GetName()}
	if p.Node != "" && !p.Server && k == kinds.Pod && stored != nil {
		if bound := stored.(*skiffv1.Pod).GetSpec().GetNodeName(); bound != p.Node {
			if bound == "" {
				bound = "no node"
			} else {
				bound = "node " + bound
			}
			return z.refuse(ctx, a, fmt.Sprintf("%s cannot %s pod %q: it is bound to %s, not to %s", p.Name, verb, k.ID(a.ns, a.name), bound, p.Node))
		}
	}
	if k == kinds.Node && obj != nil && (verb == "create" || verb == "updatestatus") {
		n := obj.(*skiffv1.Node)
		if p.Node != "" && !p.Server {
			if n.Status == nil {
				n.Status = &skiffv1.NodeStatus{}
			}
			n.Status.AgentEndpoint = p.Endpoint
			return nil
		}
		was := ""
		if stored != nil {
			was = stored.(*skiffv1.Node).GetStatus().GetAgentEndpoint()
		}
		if n.GetStatus().GetAgentEndpoint() != was {
			return z.refuse(ctx, a, agentEndpointRefusal)
		}
	}
	return nil
}

// canI answers AuthService.CanI for p: the rule of the call, and for a
// node asking about a pod by name, the node it is bound to.
func (z *authorizer) canI(ctx context.Context, b *backend, p Principal, r *skiffv1.CanIRequest) (*skiffv1.CanIResponse, error) {
	a := attrs{verb: strings.ToLower(r.GetVerb()), ns: r.GetNamespace(), name: r.GetName()}
	var k *kinds.Kind
	switch kn := strings.ToLower(r.GetKind()); kn {
	case kindCluster, kindTokens:
		a.kind = kn
	case "token":
		a.kind = kindTokens
	default:
		var err error
		if k, err = kinds.Lookup(kn); err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("kind: %w, tokens or cluster", err))
		}
		a.kind = k.Plural
		switch {
		case !k.Namespaced:
			a.ns = ""
		case a.verb != "list" && a.verb != "watch":
			a.ns = namespaceOf(k, a.ns)
		}
	}
	if a.kind == kindTokens && a.verb == "list" {
		a.ns = listTokensScope(p, a.ns)
	}
	ok, why := authorize(p, a)
	if ok && k == kinds.Pod && p.Node != "" && !p.Server && a.name != "" {
		stored, err := b.get(ctx, kinds.Pod, a.ns, a.name)
		if err != nil {
			return nil, err
		}
		if bound := stored.(*skiffv1.Pod).GetSpec().GetNodeName(); bound != p.Node {
			ok, why = false, fmt.Sprintf("%s cannot %s pod %q: it is bound to %q, not to %s", p.Name, a.verb, k.ID(a.ns, a.name), bound, p.Node)
		}
	}
	return &skiffv1.CanIResponse{Allowed: ok, Reason: why}, nil
}
