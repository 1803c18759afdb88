package cri

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/moby/spdystream"
)

// A port-forward session over SPDY speaks the kubelet's portforward.k8s.io:
// for each connection it forwards, the client creates two streams with the
// same "requestID" and "port" headers, one of streamType error and one of
// streamType data. Once both have arrived the server dials
// 127.0.0.1:<port> inside the sandbox's network namespace and copies the
// data stream both ways; if it cannot, the error stream carries the reason
// as text. Either way the server then ends both streams. A pair whose
// second stream does not come within spdyStreamWait is told so on its
// error stream. The session lasts until the client goes away.

const (
	protocolPortForward = "portforward.k8s.io"
	headerPort          = "port"
	headerRequestID     = "requestID"
	// maxForwardConns bounds the connections one session forwards (or
	// waits for the streams of) at once.
	maxForwardConns = 64
)

// forwardPair is the two streams of one forwarded connection.
type forwardPair struct {
	id     string
	data   *spdystream.Stream
	errs   *spdystream.Stream
	expiry *time.Timer
}

// acceptForwardStream checks a port-forward stream's headers.
func acceptForwardStream(st *spdystream.Stream) error {
	h := st.Headers()
	if _, err := streamPort(st); err != nil {
		return err
	}
	if typ := h.Get(headerStreamType); typ != streamTypeData && typ != streamTypeError {
		return fmt.Errorf("header %s: %q is neither %q nor %q", headerStreamType, typ, streamTypeData, streamTypeError)
	}
	return nil
}

// streamPort is the port header of a stream.
func streamPort(st *spdystream.Stream) (uint16, error) {
	v := st.Headers().Get(headerPort)
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("header %s: %q is not a port number (1-65535)", headerPort, v)
	}
	return uint16(n), nil
}

// requestID names the pair a stream belongs to. A client too old to send
// the header creates each pair's error stream, then its data stream, with
// consecutive IDs (the kubelet's guess, for the same clients).
func requestID(st *spdystream.Stream) string {
	if id := st.Headers().Get(headerRequestID); id != "" {
		return id
	}
	id := int(st.Identifier())
	if st.Headers().Get(headerStreamType) == streamTypeData {
		id -= 2
	}
	return "stream-" + strconv.Itoa(id)
}

// servePortForwardSPDY forwards each pair of streams the client creates
// to its port in the sandbox of a port-forward token.
func (s *streamServer) servePortForwardSPDY(w http.ResponseWriter, r *http.Request) {
	proto, ok := negotiate(w, r, []string{protocolPortForward})
	if !ok {
		return
	}
	p, done, ok := s.admit(w, r, streamPortForward)
	if !ok {
		return
	}
	defer done()
	ss, err := s.upgradeSPDY(w, proto, 2*maxForwardConns, acceptForwardStream)
	if err != nil {
		s.log.Debug("streaming: SPDY upgrade failed", "kind", streamPortForward, "err", err)
		return
	}
	defer ss.close()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	watchSPDY(ctx, cancel, ss)
	sb, err := s.svc.getSandbox(p.sandbox)
	if err != nil {
		return // the sandbox is gone: the connection ends
	}
	netnsPath := sb.snapshot().NetNSPath

	var (
		wg      sync.WaitGroup
		pairs   = map[string]*forwardPair{} // waiting for their second stream
		slots   = make(chan struct{}, maxForwardConns)
		expired = make(chan string)
	)
	defer func() {
		cancel()
		for _, pair := range pairs {
			pair.expiry.Stop()
		}
		ss.close() // every stream's reader ends
		wg.Wait()
	}()
	fail := func(pair *forwardPair, msg string) {
		if pair.errs != nil {
			_, _ = writeStream(pair.errs, []byte(msg))
		}
		ss.forget(pair.data, pair.errs)
		<-slots
	}
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-expired:
			if pair := pairs[id]; pair != nil {
				delete(pairs, id)
				fail(pair, fmt.Sprintf("request %s: timed out after %s waiting for its data and error streams", id, spdyStreamWait))
			}
		case st := <-ss.arrived:
			id := requestID(st)
			pair := pairs[id]
			if pair == nil {
				select {
				case slots <- struct{}{}:
				default:
					if st.Headers().Get(headerStreamType) == streamTypeError {
						_, _ = writeStream(st, fmt.Appendf(nil, "request %s: this session already forwards %d connections", id, maxForwardConns))
					}
					ss.forget(st)
					continue
				}
				pair = &forwardPair{id: id}
				pair.expiry = time.AfterFunc(spdyStreamWait, func() {
					select {
					case expired <- id:
					case <-ctx.Done():
					}
				})
				pairs[id] = pair
			}
			slot := &pair.data
			if st.Headers().Get(headerStreamType) == streamTypeError {
				slot = &pair.errs
			}
			if *slot != nil {
				pair.expiry.Stop()
				delete(pairs, id)
				ss.forget(st)
				fail(pair, fmt.Sprintf("request %s: a second %s stream", id, st.Headers().Get(headerStreamType)))
				continue
			}
			*slot = st
			if pair.data == nil || pair.errs == nil {
				continue
			}
			pair.expiry.Stop()
			delete(pairs, id)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				defer ss.forget(pair.data, pair.errs)
				s.forwardPair(ctx, netnsPath, p.sandbox, pair)
			}()
		}
	}
}

// forwardPair connects a pair's data stream to its port in the sandbox
// until both directions have ended, or ctx ends.
func (s *streamServer) forwardPair(ctx context.Context, netnsPath, sandbox string, pair *forwardPair) {
	port, _ := streamPort(pair.data)
	conn, err := s.dialPort(ctx, netnsPath, port)
	if err != nil {
		_, _ = writeStream(pair.errs, []byte(forwardError(port, sandbox, err)))
		return
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	fromPod := make(chan struct{})
	go func() {
		defer close(fromPod)
		buf := make([]byte, maxChunk)
		for {
			n, err := conn.Read(buf)
			if n > 0 {
				if _, werr := writeStream(pair.data, buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				pair.data.Close() // the pod's side ended: so does the client's copy
				return
			}
		}
	}()
	buf := make([]byte, maxChunk)
	for {
		n, err := pair.data.Read(buf)
		if n > 0 {
			_ = conn.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
			if _, werr := conn.Write(buf[:n]); werr != nil {
				conn.Close()
				break
			}
		}
		if err != nil { // the client closed (or reset) its side
			if tc, ok := conn.(interface{ CloseWrite() error }); ok {
				_ = tc.CloseWrite()
			}
			break
		}
	}
	<-fromPod
}
