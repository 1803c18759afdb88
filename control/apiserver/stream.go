package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
	"skiff.dev/skiff/control/api/stream"
)

// Exec and port-forward are WebSocket routes beside the Connect services,
// as Kubernetes' pods/exec and pods/portforward subresources:
//
//	GET /skiff.v1/pods/{namespace}/{name}/exec?container=&command=..&tty=&stdin=
//	GET /skiff.v1/pods/{namespace}/{name}/portforward?port=
//
// A caller needs the verb "exec" or "portforward" on the pod, which the
// edit and admin roles hold and view does not (Kubernetes' edit role may
// create pods/exec). The server finds the pod's node, opens the same route
// on its agent (AgentStreams) and relays until either side ends.

// maxStreamsInFlightWS bounds the exec and port-forward streams relayed
// at once.
const maxStreamsInFlightWS = 256

// AgentStreams returns the HTTP client and base URL ("https://host:port")
// that reach the agent of node at endpoint for WebSocket streams: HTTP/1.1,
// and refusing any peer but that agent.
type AgentStreams func(node, endpoint string) (*http.Client, string)

// streamTarget is the agent route a stream request resolves to.
type streamTarget struct {
	hc   *http.Client
	url  string
	node string
}

func (s *Server) registerStreams(mux *http.ServeMux) {
	mux.HandleFunc("GET /skiff.v1/pods/{namespace}/{name}/exec", func(w http.ResponseWriter, r *http.Request) { s.serveStream(w, r, "exec") })
	mux.HandleFunc("GET /skiff.v1/pods/{namespace}/{name}/portforward", func(w http.ResponseWriter, r *http.Request) { s.serveStream(w, r, "portforward") })
}

// streamStatus is the HTTP status of a Connect error.
func streamStatus(err error) int {
	switch connect.CodeOf(err) {
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeInvalidArgument:
		return http.StatusBadRequest
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	case connect.CodeFailedPrecondition:
		return http.StatusConflict
	case connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func (s *Server) serveStream(w http.ResponseWriter, r *http.Request, verb string) {
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	if s.authz != nil {
		a := attrs{verb: verb, kind: kinds.Pod.Plural, ns: ns, name: name}
		c, ok := callerFrom(r.Context())
		if !ok {
			http.Error(w, errNoCredentials.Error(), http.StatusUnauthorized)
			return
		}
		if ok, why := authorize(c.p, a); !ok {
			auditRefusal(s.log, c.p.Name, a, why, c.remote)
			http.Error(w, why, http.StatusForbidden)
			return
		}
	}
	var protocols []string
	if verb == "exec" {
		if protocols = stream.Offered(r, stream.ExecProtocols); len(protocols) == 0 {
			http.Error(w, "exec: offer the WebSocket subprotocol "+stream.ProtocolV5+" or "+stream.ProtocolV4, http.StatusBadRequest)
			return
		}
	}
	select {
	case s.streams <- struct{}{}:
		defer func() { <-s.streams }()
	default:
		w.Header().Set("Retry-After", "1")
		http.Error(w, errInFlight.Error(), http.StatusTooManyRequests)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), agentCallTimeout)
	t, err := s.streamTarget(ctx, ns, name, verb, r.URL.Query())
	cancel()
	if err != nil {
		http.Error(w, connectMessage(err), streamStatus(err))
		return
	}
	// The relay outlives the request's context (hijacked).
	bg := context.WithoutCancel(r.Context())
	down, err := stream.Dial(bg, t.hc, t.url, nil, protocols)
	if err != nil {
		var re *stream.RefusedError
		if !errors.As(err, &re) {
			err = fmt.Errorf("reach the agent of node %q: %w", t.node, err)
		}
		stream.Refuse(w, http.StatusBadGateway, err)
		return
	}
	defer down.CloseNow()
	var accept []string
	if p := down.Subprotocol(); p != "" {
		accept = []string{p}
	}
	up, err := stream.Upgrade(w, r, accept)
	if err != nil {
		return
	}
	stream.Relay(bg, up, down)
}

// streamTarget checks a stream request and finds the agent route of the
// pod's node, with errors naming what is missing.
func (s *Server) streamTarget(ctx context.Context, ns, name, verb string, q url.Values) (*streamTarget, error) {
	o, err := s.b.get(ctx, kinds.Pod, ns, name)
	if err != nil {
		return nil, err
	}
	p := o.(*skiffv1.Pod)
	out := url.Values{"namespace": {ns}, "pod": {name}, "uid": {p.GetMetadata().GetUid()}}
	path := stream.AgentExecPath
	switch verb {
	case "exec":
		container := q.Get("container")
		if container == "" {
			if n := len(p.Spec.GetContainers()); n != 1 {
				return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("pod %q has %d containers: name one with -c", name, n))
			}
			container = p.Spec.Containers[0].Name
		} else if !hasContainer(p, container) {
			return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("pod %q has no container %q", name, container))
		}
		if len(q["command"]) == 0 || q["command"][0] == "" {
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("command: at least one is required (the program to run)"))
		}
		out["container"] = []string{container}
		out["command"] = q["command"]
		for _, f := range []string{"tty", "stdin"} {
			v := q.Get(f)
			if v == "" {
				continue
			}
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s: %q is not true or false", f, v))
			}
			out[f] = []string{strconv.FormatBool(b)}
		}
	case "portforward":
		path = stream.AgentPortForwardPath
		port, err := strconv.ParseUint(q.Get("port"), 10, 16)
		if err != nil || port == 0 {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("port: %q is not a port number (1-65535)", q.Get("port")))
		}
		out["port"] = []string{strconv.FormatUint(port, 10)}
	}
	node := p.GetSpec().GetNodeName()
	if node == "" {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("pod %q is not scheduled to a node yet", name))
	}
	no, err := s.b.get(ctx, kinds.Node, "", node)
	if err != nil {
		return nil, err
	}
	endpoint := no.(*skiffv1.Node).GetStatus().GetAgentEndpoint()
	if endpoint == "" {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("node %q has not reported an agent endpoint", node))
	}
	hc, base := s.agentStreams(node, endpoint)
	return &streamTarget{hc: hc, url: base + path + "?" + out.Encode(), node: node}, nil
}
