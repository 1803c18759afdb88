package apiserver

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
)

// limitsServer is h served over HTTP/1.1 and cleartext HTTP/2, with a
// client for each, as `skiff server` serves it.
type limitsServer struct {
	url  string
	http *http.Client // HTTP/1.1
	h2c  *http.Client // cleartext HTTP/2 (prior knowledge), for gRPC
}

func serveLimits(t *testing.T, h http.Handler) *limitsServer {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	h2 := &http.Transport{Protocols: p}
	h1 := &http.Transport{}
	t.Cleanup(func() {
		h1.CloseIdleConnections()
		h2.CloseIdleConnections()
		srv.Close()
	})
	// A call the server should refuse at once fails the test instead of
	// hanging it when it does not.
	const timeout = 10 * time.Second
	return &limitsServer{url: srv.URL, http: &http.Client{Transport: h1, Timeout: timeout}, h2c: &http.Client{Transport: h2, Timeout: timeout}}
}

// serveRealAPI serves the real API server over a real store.
func serveRealAPI(t *testing.T) *limitsServer {
	t.Helper()
	return serveLimits(t, realServer(t).Handler())
}

func (s *limitsServer) pods(opts ...connect.ClientOption) skiffv1connect.PodServiceClient {
	return skiffv1connect.NewPodServiceClient(s.http, s.url, opts...)
}

func (s *limitsServer) grpcPods() skiffv1connect.PodServiceClient {
	return skiffv1connect.NewPodServiceClient(s.h2c, s.url, connect.WithGRPC())
}

// post sends body to a procedure as is and returns the status and body.
func (s *limitsServer) post(t *testing.T, c *http.Client, procedure string, body io.Reader, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.url+procedure, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// connectError is a Connect unary error body.
type connectError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func readConnectError(t *testing.T, res *http.Response) connectError {
	t.Helper()
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	var ce connectError
	if err := json.Unmarshal(data, &ce); err != nil {
		t.Fatalf("status %d, body %q is not a Connect error: %v", res.StatusCode, data, err)
	}
	return ce
}

// withUnknown returns the message with an unknown field of n bytes.
func withUnknown[M proto.Message](m M, num protowire.Number, n int) M {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	b = protowire.AppendBytes(b, make([]byte, n))
	m.ProtoReflect().SetUnknown(b)
	return m
}

func TestUnknownFieldsRefused(t *testing.T) {
	s := serveRealAPI(t)
	ctx := context.Background()
	const okPod = `"metadata":{"name":"ok"},"spec":{"containers":[{"name":"c","image":"i"}]}`
	jsonTests := []struct {
		name string
		body string
		want string
	}{
		{"in the pod", `{` + okPod + `,"bogus":1}`, `unknown field "bogus" in skiff.v1.Pod`},
		{"in the request", `{` + okPod + `,"dryRunn":true}`, `unknown field "dryRunn" in skiff.v1.Pod`},
		{"in a list element", `{"metadata":{"name":"ok"},"spec":{"containers":[{"name":"c","image":"i","imagePullPolicy":"Always"}]}}`, `unknown field "imagePullPolicy" in skiff.v1.Container`},
		{"in metadata", `{"metadata":{"name":"ok","owner":["x"]},"spec":{"containers":[{"name":"c","image":"i"}]}}`, `unknown field "owner" in skiff.v1.ObjectMeta`},
	}
	for _, tt := range jsonTests {
		t.Run("json "+tt.name, func(t *testing.T) {
			res := s.post(t, s.http, "/skiff.v1.PodService/Create", strings.NewReader(tt.body), http.Header{"Content-Type": {"application/json"}})
			ce := readConnectError(t, res)
			if res.StatusCode != http.StatusBadRequest || ce.Code != "invalid_argument" || !strings.Contains(ce.Message, tt.want) {
				t.Errorf("got %d %+v, want 400 invalid_argument with %q", res.StatusCode, ce, tt.want)
			}
		})
	}
	binaryTests := []struct {
		name   string
		client skiffv1connect.PodServiceClient
		req    *skiffv1.Pod
		want   string
	}{
		// 1 MiB of unknown bytes: under the request limit, so it is the
		// unknown field, not the size, that is refused.
		{"connect, in the pod", s.pods(), withUnknown(pod("ok"), 99, 1<<20), "unknown field number 99 in skiff.v1.Pod"},
		{"connect, in metadata", s.pods(), func() *skiffv1.Pod {
			p := pod("ok")
			withUnknown(p.Metadata, 42, 10)
			return p
		}(), "unknown field number 42 in skiff.v1.ObjectMeta"},
		{"grpc, in a container", s.grpcPods(), func() *skiffv1.Pod {
			p := pod("ok")
			withUnknown(p.Spec.Containers[0], 77, 10)
			return p
		}(), "unknown field number 77 in skiff.v1.Container"},
	}
	for _, tt := range binaryTests {
		t.Run("binary "+tt.name, func(t *testing.T) {
			_, err := tt.client.Create(ctx, connect.NewRequest(tt.req))
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("create: %v, want InvalidArgument with %q", err, tt.want)
			}
		})
	}
	list, err := s.pods().List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
	if err != nil || len(list.Msg.Items) != 0 {
		t.Fatalf("refused creates stored pods: %v %v", list.Msg.GetItems(), err)
	}

	// Both spellings protojson accepts (JSON and proto names) still work.
	body := `{"metadata":{"name":"ok"},"spec":{"containers":[{"name":"c","image":"i"}],"restart_policy":"Never","runtimeClassName":"wasm"}}`
	res := s.post(t, s.http, "/skiff.v1.PodService/Create", strings.NewReader(body), http.Header{"Content-Type": {"application/json"}})
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("create with known fields: status %d", res.StatusCode)
	}
}

// gzipBomb returns a gzip stream (concatenated members, which gzip readers
// take as one stream) of size zero bytes, about size/1000 bytes long.
func gzipBomb(t *testing.T, size int) []byte {
	t.Helper()
	var member bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&member, gzip.BestCompression)
	if _, err := zw.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return bytes.Repeat(member.Bytes(), size>>20)
}

// hideLength makes a body whose length the client does not know, so it is
// sent chunked (HTTP/1.1) without Content-Length.
type hideLength struct{ r io.Reader }

func (h hideLength) Read(p []byte) (int, error) { return h.r.Read(p) }

func TestRequestSizeLimits(t *testing.T) {
	s := serveRealAPI(t)
	protoType := http.Header{"Content-Type": {"application/proto"}}
	big := bytes.Repeat([]byte{'x'}, maxRequestBytes+512<<10)

	t.Run("body over the limit, with Content-Length", func(t *testing.T) {
		res := s.post(t, s.http, "/skiff.v1.PodService/Create", bytes.NewReader(big), protoType)
		ce := readConnectError(t, res)
		if res.StatusCode != http.StatusTooManyRequests || ce.Code != "resource_exhausted" || !strings.Contains(ce.Message, "request body is 3670016 bytes, the limit is 3145728") {
			t.Errorf("got %d %+v, want 429 resource_exhausted naming the limit", res.StatusCode, ce)
		}
	})
	t.Run("body over the limit, chunked", func(t *testing.T) {
		res := s.post(t, s.http, "/skiff.v1.PodService/Create", hideLength{bytes.NewReader(big)}, protoType)
		ce := readConnectError(t, res)
		if res.StatusCode != http.StatusTooManyRequests || ce.Code != "resource_exhausted" || !strings.Contains(ce.Message, "request body is larger than the limit of 3145728 bytes") {
			t.Errorf("got %d %+v, want 429 resource_exhausted naming the limit", res.StatusCode, ce)
		}
	})
	t.Run("a client's message over the limit", func(t *testing.T) {
		p := pod("big")
		p.Spec.Containers[0].Env = []*skiffv1.EnvVar{{Name: "A", Value: string(big)}}
		_, err := s.pods().Create(context.Background(), connect.NewRequest(p))
		if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "3145728") {
			t.Errorf("create: %v, want ResourceExhausted naming the limit", err)
		}
	})
	t.Run("gzip under the limit", func(t *testing.T) {
		p := pod("zipped")
		p.Spec.Containers[0].Env = []*skiffv1.EnvVar{{Name: "A", Value: strings.Repeat("x", 1<<20)}}
		for _, c := range []skiffv1connect.PodServiceClient{s.pods(connect.WithSendGzip()), skiffv1connect.NewPodServiceClient(s.h2c, s.url, connect.WithGRPC(), connect.WithSendGzip())} {
			res, err := c.Create(context.Background(), dryRun(p))
			if err != nil || len(res.Msg.Spec.Containers[0].Env[0].Value) != 1<<20 {
				t.Errorf("compressed create: %v", err)
			}
		}
	})

	// A decompression bomb: about 1 MB of gzip that inflates to 1 GiB.
	const inflated = 1 << 30
	bomb := gzipBomb(t, inflated)
	t.Logf("bomb: %d bytes of gzip, %d bytes inflated", len(bomb), inflated)
	envelope := binary.BigEndian.AppendUint32([]byte{1}, uint32(len(bomb)))
	envelope = append(envelope, bomb...)
	bombs := []struct {
		name string
		send func(t *testing.T) (code, message string)
	}{
		{"connect", func(t *testing.T) (string, string) {
			h := http.Header{"Content-Type": {"application/proto"}, "Content-Encoding": {"gzip"}}
			res := s.post(t, s.http, "/skiff.v1.PodService/Create", bytes.NewReader(bomb), h)
			ce := readConnectError(t, res)
			if res.StatusCode != http.StatusTooManyRequests {
				t.Errorf("status %d, want 429", res.StatusCode)
			}
			return ce.Code, ce.Message
		}},
		{"connect stream", func(t *testing.T) (string, string) {
			// A watch request: Connect streaming compresses each envelope.
			h := http.Header{"Content-Type": {"application/connect+proto"}, "Connect-Content-Encoding": {"gzip"}}
			res := s.post(t, s.http, "/skiff.v1.PodService/Watch", bytes.NewReader(envelope), h)
			defer res.Body.Close()
			data, _ := io.ReadAll(res.Body)
			// The end-of-stream message: flags 2 (and 1 if compressed), length, JSON {"error":{...}}.
			if len(data) < 5 || data[0]&2 == 0 {
				t.Fatalf("status %d, body %q is not a Connect end-of-stream", res.StatusCode, data)
			}
			payload := data[5:]
			if data[0]&1 != 0 { // compressed, as the request was
				zr, err := gzip.NewReader(bytes.NewReader(payload))
				if err != nil {
					t.Fatal(err)
				}
				if payload, err = io.ReadAll(zr); err != nil {
					t.Fatal(err)
				}
			}
			var end struct{ Error connectError }
			if err := json.Unmarshal(payload, &end); err != nil {
				t.Fatal(err)
			}
			return end.Error.Code, end.Error.Message
		}},
		{"grpc", func(t *testing.T) (string, string) {
			h := http.Header{"Content-Type": {"application/grpc"}, "Grpc-Encoding": {"gzip"}, "Te": {"trailers"}}
			res := s.post(t, s.h2c, "/skiff.v1.PodService/Create", bytes.NewReader(envelope), h)
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			status, msg := res.Header.Get("Grpc-Status"), res.Header.Get("Grpc-Message")
			if status == "" {
				status, msg = res.Trailer.Get("Grpc-Status"), res.Trailer.Get("Grpc-Message")
			}
			if status == "8" {
				return "resource_exhausted", msg
			}
			return "grpc-status " + status, msg
		}},
	}
	for _, b := range bombs {
		t.Run("gzip bomb, "+b.name, func(t *testing.T) {
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			code, msg := b.send(t)
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			allocated := after.TotalAlloc - before.TotalAlloc
			t.Logf("refused in %v; %d MB allocated meanwhile, heap %d -> %d MB", elapsed.Round(time.Millisecond), allocated>>20, before.HeapAlloc>>20, after.HeapAlloc>>20)
			if code != "resource_exhausted" || !strings.Contains(msg, "3145728") {
				t.Errorf("got %s %q, want resource_exhausted naming the limit", code, msg)
			}
			// Connect's own gzip would inflate all of it to report its size.
			if strings.Contains(msg, "1073741824") {
				t.Errorf("the server inflated the whole bomb: %q", msg)
			}
			if allocated > 100<<20 {
				t.Errorf("the server allocated %d MB for one request", allocated>>20)
			}
		})
	}
}

// blockingPods holds List and Watch calls until released, telling entered
// when one starts.
type blockingPods struct {
	skiffv1connect.UnimplementedPodServiceHandler
	entered chan string
	release chan struct{}
}

func (b *blockingPods) List(ctx context.Context, _ *connect.Request[skiffv1.ListRequest]) (*connect.Response[skiffv1.PodList], error) {
	b.entered <- "list"
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return connect.NewResponse(&skiffv1.PodList{}), nil
}

func (b *blockingPods) Watch(ctx context.Context, _ *connect.Request[skiffv1.WatchRequest], st *connect.ServerStream[skiffv1.PodWatchEvent]) error {
	b.entered <- "watch"
	if err := st.Send(&skiffv1.PodWatchEvent{Type: skiffv1.EventType_EVENT_TYPE_ADDED}); err != nil {
		return err
	}
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return nil
}

func TestLimitInFlight(t *testing.T) {
	fake := &blockingPods{entered: make(chan string, 10), release: make(chan struct{})}
	mux := http.NewServeMux()
	mux.Handle(skiffv1connect.NewPodServiceHandler(fake, handlerOptions(nil)...))
	s := serveLimits(t, limitInFlight(mux, 2, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	entered := func(want string) {
		t.Helper()
		select {
		case got := <-fake.entered:
			if got != want {
				t.Fatalf("%s started, want %s", got, want)
			}
		case <-ctx.Done():
			t.Fatalf("no %s started", want)
		}
	}
	const busy = "too many requests in flight; retry later"

	// Two lists take both unary seats; a watch takes the stream seat.
	listDone := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := s.pods().List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
			listDone <- err
		}()
		entered("list")
	}
	watch, err := s.pods().Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	if !watch.Receive() {
		t.Fatalf("watch with unary seats all taken: %v", watch.Err())
	}
	entered("watch")

	t.Run("connect unary", func(t *testing.T) {
		_, err := s.pods().List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
		if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), busy) {
			t.Errorf("third list: %v, want ResourceExhausted %q", err, busy)
		}
	})
	t.Run("connect unary, on the wire", func(t *testing.T) {
		res := s.post(t, s.http, "/skiff.v1.PodService/List", strings.NewReader("{}"), http.Header{"Content-Type": {"application/json"}})
		ce := readConnectError(t, res)
		if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") != "1" || ce != (connectError{"resource_exhausted", busy}) {
			t.Errorf("got %d (Retry-After %q) %+v, want 429 resource_exhausted %q", res.StatusCode, res.Header.Get("Retry-After"), ce, busy)
		}
	})
	t.Run("grpc unary", func(t *testing.T) {
		_, err := s.grpcPods().List(ctx, connect.NewRequest(&skiffv1.ListRequest{}))
		if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), busy) {
			t.Errorf("third list over gRPC: %v, want ResourceExhausted %q", err, busy)
		}
	})
	for name, c := range map[string]skiffv1connect.PodServiceClient{"connect": s.pods(), "grpc": s.grpcPods()} {
		t.Run(name+" stream", func(t *testing.T) {
			st, err := c.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{}))
			if err == nil {
				defer st.Close()
				if st.Receive() {
					t.Fatal("second watch got an event")
				}
				err = st.Err()
			}
			if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), busy) {
				t.Errorf("second watch: %v, want ResourceExhausted %q", err, busy)
			}
		})
	}
	t.Run("not a procedure", func(t *testing.T) {
		res := s.post(t, s.http, "/healthz", nil, nil)
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("status %d, want the mux's 404", res.StatusCode)
		}
	})

	// Seats are given back.
	close(fake.release)
	for range 2 {
		if err := <-listDone; err != nil {
			t.Errorf("held list: %v", err)
		}
	}
	for watch.Receive() {
	}
	if _, err := s.pods().List(ctx, connect.NewRequest(&skiffv1.ListRequest{})); err != nil {
		t.Errorf("list after the others ended: %v", err)
	}
	entered("list")
	st, err := s.grpcPods().Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{}))
	if err != nil || !st.Receive() {
		t.Errorf("watch after the first ended: %v %v", err, st.Err())
	}
	st.Close()
}

// TestBodyBudget shows that bodies held before their requests are served
// are bounded as a whole: with a budget of 2 MiB, a second body that would
// take it over is refused while the first is still arriving.
func TestBodyBudget(t *testing.T) {
	served := make(chan int, 1)
	l := newInFlight(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		served <- int(n)
	}), 10, 10, 2<<20)
	s := serveLimits(t, l)
	const path = "/skiff.v1.PodService/List"
	pr, pw := io.Pipe()
	first := make(chan error, 1)
	go func() {
		res, err := s.http.Post(s.url+path, "application/proto", pr)
		if err == nil {
			res.Body.Close()
		}
		first <- err
	}()
	if _, err := pw.Write(make([]byte, 700<<10)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); l.buffered.Load() < 700<<10; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the first body was not charged: %d bytes", l.buffered.Load())
		}
	}
	res := s.post(t, s.http, path, bytes.NewReader(make([]byte, 1536<<10)), http.Header{"Content-Type": {"application/proto"}})
	ce := readConnectError(t, res)
	if res.StatusCode != http.StatusTooManyRequests || ce.Code != "resource_exhausted" || ce.Message != errBodyBudget.Error() {
		t.Errorf("second body: %d %+v, want 429 %q", res.StatusCode, ce, errBodyBudget)
	}
	pw.Close()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if n := <-served; n != 700<<10 {
		t.Errorf("first body: handler read %d bytes, want %d", n, 700<<10)
	}
	if n := l.buffered.Load(); n != 0 {
		t.Errorf("%d bytes still charged after both requests", n)
	}
}

func TestMetaLimits(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()
	name63, name64 := strings.Repeat("n", 63), strings.Repeat("n", 64)
	label := func(n int) string { return strings.Repeat("a", n) }
	prefix253 := label(63) + "." + label(63) + "." + label(63) + "." + label(61)
	prefix254 := prefix253 + "a"
	tests := []struct {
		name   string
		mutate func(*skiffv1.Pod)
		want   string // "" when the pod is accepted
	}{
		{"object too large", func(p *skiffv1.Pod) {
			p.Spec.Containers[0].Env = []*skiffv1.EnvVar{{Name: "A", Value: strings.Repeat("x", maxObjectBytes)}}
		}, "object is too large: 157"},
		{"object at the limit", func(p *skiffv1.Pod) {
			// What the server adds (the default tolerations) counts too.
			p.Spec.Containers[0].Env = []*skiffv1.EnvVar{{Name: "A", Value: strings.Repeat("x", maxObjectBytes-400)}}
		}, ""},
		{"annotations too long", func(p *skiffv1.Pod) {
			p.Metadata.Annotations = map[string]string{"a": strings.Repeat("x", maxAnnotationBytes)}
		}, "metadata.annotations: Too long: must have at most 262144 bytes"},
		{"annotations at the limit", func(p *skiffv1.Pod) {
			p.Metadata.Annotations = map[string]string{"a": strings.Repeat("x", maxAnnotationBytes-1)}
		}, ""},
		{"label name of 64", func(p *skiffv1.Pod) { p.Metadata.Labels = map[string]string{name64: "v"} },
			`metadata.labels: invalid key "` + name64 + `": name part must be no more than 63 characters`},
		{"label prefix of 254", func(p *skiffv1.Pod) { p.Metadata.Labels = map[string]string{prefix254 + "/app": "v"} },
			`metadata.labels: invalid key "` + prefix254 + `/app": prefix part must be no more than 253 characters`},
		{"annotation name of 64", func(p *skiffv1.Pod) { p.Metadata.Annotations = map[string]string{"example.com/" + name64: "v"} },
			`metadata.annotations: invalid key "example.com/` + name64 + `": name part must be no more than 63`},
		{"longest label key", func(p *skiffv1.Pod) { p.Metadata.Labels = map[string]string{prefix253 + "/" + name63: "v"} }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pod("limits")
			tt.mutate(p)
			_, err := a.pods.Create(ctx, dryRun(p))
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("create: %v, want it accepted", err)
			case tt.want != "" && (connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("create: %v, want InvalidArgument with %q", err, tt.want)
			}
		})
	}
}

func TestIsStream(t *testing.T) {
	tests := []struct {
		path       string
		stream, ok bool
	}{
		{"/skiff.v1.PodService/Watch", true, true},
		{"/skiff.v1.NodeService/Watch", true, true},
		{"/skiff.v1.PodService/List", false, true},
		{"/skiff.v1.PodService/Logs", false, true},
		{"/skiff.v1.PodService/Nope", false, false},
		{"/skiff.v1.Pod/Watch", false, false}, // a message, not a service
		{"/healthz", false, false},
		{"/", false, false},
	}
	for _, tt := range tests {
		if stream, ok := isStream(tt.path); stream != tt.stream || ok != tt.ok {
			t.Errorf("isStream(%q) = %v, %v; want %v, %v", tt.path, stream, ok, tt.stream, tt.ok)
		}
	}
}

// dryRun is a create request that asks for a dry run.
func dryRun(p *skiffv1.Pod) *connect.Request[skiffv1.Pod] {
	r := connect.NewRequest(p)
	r.Header().Set(kinds.DryRunHeader, "All")
	return r
}
