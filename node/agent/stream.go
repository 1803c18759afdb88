package agent

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/control/api/stream"
)

// streamService serves exec and port-forward to the apiserver as
// WebSocket routes next to the AgentService, behind the same listener
// (only the cluster's servers get through its TLS). It finds the
// container or sandbox through CRI, asks CRI for a streaming URL, opens it
// and relays: exec message by message (the channel protocol is the same on
// both legs), port-forward from raw bytes to the CRI's port-forward
// framing.
type streamService struct {
	rt    runtimeapi.RuntimeServiceClient
	log   *slog.Logger
	hc    *http.Client  // reaches the CRI streaming server
	seats chan struct{} // one per stream
}

// maxStreams bounds the exec and port-forward streams served at once.
const maxStreams = 128

func newStreamService(rt runtimeapi.RuntimeServiceClient, log *slog.Logger) *streamService {
	return &streamService{rt: rt, log: log, hc: &http.Client{}, seats: make(chan struct{}, maxStreams)}
}

func (s *streamService) register(mux *http.ServeMux) {
	mux.HandleFunc("GET "+stream.AgentExecPath, s.serveExec)
	mux.HandleFunc("GET "+stream.AgentPortForwardPath, s.servePortForward)
}

// seat takes a seat, or answers 503.
func (s *streamService) seat(w http.ResponseWriter) bool {
	select {
	case s.seats <- struct{}{}:
		return true
	default:
		http.Error(w, fmt.Sprintf("this node serves %d streams already; try again later", maxStreams), http.StatusServiceUnavailable)
		return false
	}
}

// httpStatus is the HTTP status of a CRI error.
func httpStatus(err error) int {
	switch status.Code(err) {
	case codes.NotFound:
		return http.StatusNotFound
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.FailedPrecondition:
		return http.StatusConflict
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable, codes.ResourceExhausted:
		return http.StatusServiceUnavailable
	}
	return http.StatusBadGateway
}

func criMessage(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Message()
	}
	return err.Error()
}

// podQuery is the pod a stream request names.
type podQuery struct{ namespace, pod, uid string }

func podOf(q url.Values) (podQuery, error) {
	p := podQuery{namespace: q.Get("namespace"), pod: q.Get("pod"), uid: q.Get("uid")}
	if p.pod == "" || p.uid == "" {
		return p, fmt.Errorf("query parameters pod and uid are required")
	}
	return p, nil
}

// serveExec runs a command in a running container of a pod of this node.
func (s *streamService) serveExec(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	pod, err := podOf(q)
	name := q.Get("container")
	cmd := q["command"]
	switch {
	case err != nil:
	case name == "":
		err = fmt.Errorf("query parameter container is required")
	case len(cmd) == 0:
		err = fmt.Errorf("query parameter command is required")
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	tty, stdin := q.Get("tty") == "true", q.Get("stdin") == "true"
	protocols := stream.Offered(r, stream.ExecProtocols)
	if len(protocols) == 0 {
		http.Error(w, "offer the subprotocol "+stream.ProtocolV5+" or "+stream.ProtocolV4, http.StatusBadRequest)
		return
	}
	if !s.seat(w) {
		return
	}
	defer func() { <-s.seats }()
	ctx, cancel := context.WithTimeout(r.Context(), criCallTimeout)
	id, err := s.runningContainer(ctx, pod, name)
	if err != nil {
		cancel()
		stream.Refuse(w, http.StatusNotFound, err)
		return
	}
	res, err := s.rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: id, Cmd: cmd, Tty: tty, Stdin: stdin, Stdout: true, Stderr: !tty})
	cancel()
	if err != nil {
		http.Error(w, fmt.Sprintf("exec in container %q of pod %q: %s", name, pod.pod, criMessage(err)), httpStatus(err))
		return
	}
	// The relay outlives the request's context (hijacked), not the node.
	down, err := stream.Dial(context.WithoutCancel(r.Context()), s.hc, res.GetUrl(), nil, protocols)
	if err != nil {
		stream.Refuse(w, http.StatusBadGateway, fmt.Errorf("open the CRI streaming URL: %w", err))
		return
	}
	defer down.CloseNow()
	up, err := stream.Upgrade(w, r, []string{down.Subprotocol()})
	if err != nil {
		return
	}
	s.log.Info("exec", "pod", pod.namespace+"/"+pod.pod, "container", name, "command", cmd[0], "tty", tty)
	stream.Relay(context.WithoutCancel(r.Context()), up, down)
}

// runningContainer finds the running container name of pod.
func (s *streamService) runningContainer(ctx context.Context, pod podQuery, name string) (string, error) {
	res, err := s.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		State:         &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
		LabelSelector: map[string]string{LabelPodUID: pod.uid, LabelContainerName: name},
	}})
	if err != nil {
		return "", &stream.RefusedError{Status: httpStatus(err), Message: "list containers: " + criMessage(err)}
	}
	for _, c := range res.GetContainers() {
		return c.GetId(), nil
	}
	return "", &stream.RefusedError{Status: http.StatusConflict, Message: fmt.Sprintf("container %q of pod %q is not running on this node", name, pod.pod)}
}

// servePortForward relays one TCP connection to a port of a pod of this
// node: the WebSocket's binary messages are its bytes.
func (s *streamService) servePortForward(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	pod, err := podOf(q)
	port, perr := strconv.ParseUint(q.Get("port"), 10, 16)
	if err == nil && (perr != nil || port == 0) {
		err = fmt.Errorf("query parameter port: %q is not a port number (1-65535)", q.Get("port"))
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !s.seat(w) {
		return
	}
	defer func() { <-s.seats }()
	ctx, cancel := context.WithTimeout(r.Context(), criCallTimeout)
	res, err := s.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		State:         &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
		LabelSelector: map[string]string{LabelPodUID: pod.uid},
	}})
	var sandbox string
	if err == nil {
		for _, sb := range res.GetItems() {
			sandbox = sb.GetId()
		}
		if sandbox == "" {
			err = status.Error(codes.NotFound, "it has no ready sandbox on this node")
		}
	}
	var pf *runtimeapi.PortForwardResponse
	if err == nil {
		pf, err = s.rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: sandbox, Port: []int32{int32(port)}})
	}
	cancel()
	if err != nil {
		http.Error(w, fmt.Sprintf("port-forward to pod %q: %s", pod.pod, criMessage(err)), httpStatus(err))
		return
	}
	bg := context.WithoutCancel(r.Context())
	down, err := stream.Dial(bg, s.hc, pf.GetUrl()+"?port="+strconv.Itoa(int(port)), nil, []string{stream.ProtocolV4})
	if err != nil {
		stream.Refuse(w, http.StatusBadGateway, fmt.Errorf("open the CRI streaming URL: %w", err))
		return
	}
	defer down.CloseNow()
	// The CRI server first names the port on the data and error channels.
	hctx, hcancel := context.WithTimeout(bg, stream.DialTimeout)
	for range 2 {
		if _, msg, err := down.Read(hctx); err != nil || len(msg) != 3 || binary.LittleEndian.Uint16(msg[1:]) != uint16(port) {
			hcancel()
			http.Error(w, "the CRI streaming server did not open the port-forward", http.StatusBadGateway)
			return
		}
	}
	hcancel()
	up, err := stream.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	s.log.Debug("port-forward", "pod", pod.namespace+"/"+pod.pod, "port", port)
	relayForward(bg, up, down)
}

// relayForward relays raw bytes of up to channel 0 of down and back;
// an error on channel 1 ends up with the error as the close reason.
func relayForward(ctx context.Context, up, down *websocket.Conn) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idle := time.AfterFunc(stream.IdleTimeout, cancel)
	defer idle.Stop()
	write := func(c *websocket.Conn, msg []byte) error {
		wctx, wcancel := context.WithTimeout(ctx, stream.WriteTimeout)
		defer wcancel()
		return c.Write(wctx, websocket.MessageBinary, msg)
	}
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		defer cancel()
		for {
			_, msg, err := up.Read(ctx)
			if err != nil {
				return
			}
			idle.Reset(stream.IdleTimeout)
			if write(down, append([]byte{0}, msg...)) != nil {
				return
			}
		}
	}()
	code, reason := websocket.StatusNormalClosure, ""
	for {
		_, msg, err := down.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				code, reason = websocket.StatusGoingAway, "the client went away or the stream was idle"
			}
			break
		}
		idle.Reset(stream.IdleTimeout)
		if len(msg) < 2 {
			continue
		}
		if msg[0] == 1 {
			code, reason = websocket.StatusInternalError, stream.Reason(string(msg[1:]))
			break
		}
		if msg[0] == 0 && write(up, msg[1:]) != nil {
			break
		}
	}
	_ = up.Close(code, reason) // bounded: coder/websocket waits 5s at most for the answer
	cancel()
	down.CloseNow()
	up.CloseNow()
	<-upDone
}
