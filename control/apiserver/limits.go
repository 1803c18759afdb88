package apiserver

// This file bounds what one request may cost the server, as the Kubernetes
// API server does: the size of a request and of what it decompresses to,
// the number of requests being served at once, the size of a stored object
// and of its metadata, and it refuses fields the API does not declare
// instead of dropping or storing them.

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

const (
	// maxRequestBytes bounds a request body as it arrives and each message
	// in it once decompressed: 3 MiB, the Kubernetes API server's limit.
	maxRequestBytes = 3 << 20
	// maxObjectBytes bounds an object as stored: 1.5 MiB, etcd's default
	// request limit, which is what bounds a Kubernetes object.
	maxObjectBytes = 3 << 19
	// maxAnnotationBytes bounds the keys and values of an object's
	// annotations together, as Kubernetes does.
	maxAnnotationBytes = 256 << 10

	// maxUnaryInFlight and maxStreamsInFlight are the default bounds of
	// limitInFlight (Kubernetes: --max-requests-inflight 400).
	maxUnaryInFlight   = 400
	maxStreamsInFlight = 1000
	// maxBufferedBodyBytes bounds the request bodies held in memory at once
	// (read and not yet answered), so that many large bodies, arriving
	// before their requests get a seat, cannot exhaust memory.
	maxBufferedBodyBytes = 512 << 20
)

// handlerOptions are the options of every service's handler: codecs that
// refuse unknown fields, the message size limit and a gzip that stops
// decompressing at that limit. The binary codec encodes the watch events
// that events shares once for all watches (events may be nil).
func handlerOptions(events *kinds.WatchEvents) []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithCodec(strictProtoCodec{events: events}),
		connect.WithCodec(strictJSONCodec{name: "json"}),
		connect.WithCodec(strictJSONCodec{name: "json; charset=utf-8"}),
		connect.WithReadMaxBytes(maxRequestBytes),
		// Connect's own gzip bounds the memory a bomb takes but, once past
		// the limit, inflates the rest to learn its size: CPU in proportion
		// to what the bomb claims (a third of a second per GiB here).
		// Replace it (nil first, so "gzip" is listed once).
		connect.WithCompression("gzip", nil, nil),
		connect.WithCompression("gzip",
			func() connect.Decompressor { return &boundedGzipReader{} },
			// BestSpeed: a list of 10,000 like pods (6.6 MB) came out
			// 12% larger than at the default level, in a third of the
			// time (7.5 ms against 23.5 ms); bench store's list p50 went
			// from 124 to 99 ms.
			func() connect.Compressor {
				w, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed) // a valid level: no error
				return w
			}),
		// Compress only what is worth it, as the Kubernetes API server
		// does: gzip of every small message cost watches most of their CPU.
		connect.WithCompressMinBytes(compressMinBytes),
	}
}

// compressMinBytes is the smallest response message that is gzipped (when
// the client accepts it): a list of many objects, never a watch event or a
// single object.
const compressMinBytes = 128 << 10

// strictProtoCodec is the binary protobuf codec, except that a message with
// a field its schema does not declare is refused: protobuf would keep it as
// unknown bytes, and the store would keep them with the object.
//
// A watch event that events shares is marshalled once, and its bytes copied
// for each watch; nothing else is remembered.
type strictProtoCodec struct{ events *kinds.WatchEvents }

func (strictProtoCodec) Name() string   { return "proto" }
func (strictProtoCodec) IsBinary() bool { return true }

func (c strictProtoCodec) Marshal(v any) ([]byte, error) {
	return c.MarshalAppend(nil, v)
}

// MarshalAppend appends v's encoding to dst. Connect prefers it to Marshal
// and recycles the slice either returns: so a shared encoding is copied,
// never returned.
func (c strictProtoCodec) MarshalAppend(dst []byte, v any) ([]byte, error) {
	data, shared, err := c.events.Encoding(v, "proto", proto.Marshal)
	if shared {
		return append(dst, data...), err
	}
	m, err := asProto(v)
	if err != nil {
		return nil, err
	}
	return proto.MarshalOptions{}.MarshalAppend(dst, m)
}

func (strictProtoCodec) MarshalStable(v any) ([]byte, error) {
	m, err := asProto(v)
	if err != nil {
		return nil, err
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

func (strictProtoCodec) Unmarshal(data []byte, v any) error {
	m, err := asProto(v)
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(data, m); err != nil {
		return err
	}
	return unknownProtoField(m.ProtoReflect())
}

// unknownProtoField returns an error naming the first field that m, or a
// message in it, holds as unknown bytes.
func unknownProtoField(m protoreflect.Message) error {
	if u := m.GetUnknown(); len(u) > 0 {
		num, _, n := protowire.ConsumeTag(u)
		if n < 0 {
			return fmt.Errorf("malformed unknown field in %s", m.Descriptor().FullName())
		}
		return fmt.Errorf("unknown field number %d in %s", num, m.Descriptor().FullName())
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				return true
			}
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				err = unknownProtoField(mv.Message())
				return err == nil
			})
		case fd.Message() == nil:
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				err = unknownProtoField(l.Get(i).Message())
			}
		default:
			err = unknownProtoField(v.Message())
		}
		return err == nil
	})
	return err
}

// strictJSONCodec is the protobuf JSON codec, except that a member the
// schema does not declare is refused rather than dropped.
type strictJSONCodec struct{ name string }

func (c strictJSONCodec) Name() string { return c.name }
func (strictJSONCodec) IsBinary() bool { return false }

func (strictJSONCodec) Marshal(v any) ([]byte, error) {
	m, err := asProto(v)
	if err != nil {
		return nil, err
	}
	return protojson.Marshal(m)
}

func (c strictJSONCodec) MarshalStable(v any) ([]byte, error) {
	data, err := c.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, data); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func (strictJSONCodec) Unmarshal(data []byte, v any) error {
	m, err := asProto(v)
	if err != nil {
		return err
	}
	err = protojson.UnmarshalOptions{DiscardUnknown: false}.Unmarshal(data, m)
	if err == nil {
		return nil
	}
	// protojson names the member but not the message it is in; find it.
	if uerr := unknownJSONField(data, m.ProtoReflect().Descriptor()); uerr != nil {
		return uerr
	}
	return err
}

// unknownJSONField returns an error naming the first member (in key order)
// of the JSON object data that md does not declare, descending into
// messages, lists and maps. It returns nil when it finds none or data is
// not what md's JSON form should be; protojson has the error then.
func unknownJSONField(data []byte, md protoreflect.MessageDescriptor) error {
	if md.ParentFile().Package() == "google.protobuf" {
		return nil // well-known types have JSON forms of their own
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(data, &obj) != nil {
		return nil
	}
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		fd := md.Fields().ByJSONName(k)
		if fd == nil {
			fd = md.Fields().ByName(protoreflect.Name(k))
		}
		if fd == nil {
			return fmt.Errorf("unknown field %q in %s", k, md.FullName())
		}
		if err := unknownJSONValue(obj[k], fd); err != nil {
			return err
		}
	}
	return nil
}

func unknownJSONValue(data []byte, fd protoreflect.FieldDescriptor) error {
	switch {
	case fd.IsMap():
		vmd := fd.MapValue().Message()
		if vmd == nil {
			return nil
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(data, &m) != nil {
			return nil
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if err := unknownJSONField(m[k], vmd); err != nil {
				return err
			}
		}
	case fd.Message() == nil:
	case fd.IsList():
		var l []json.RawMessage
		if json.Unmarshal(data, &l) != nil {
			return nil
		}
		for _, e := range l {
			if err := unknownJSONField(e, fd.Message()); err != nil {
				return err
			}
		}
	default:
		return unknownJSONField(data, fd.Message())
	}
	return nil
}

func asProto(v any) (proto.Message, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", v)
	}
	return m, nil
}

// errDecompressedTooLarge stops a gzip stream at the message size limit.
var errDecompressedTooLarge = fmt.Errorf("decompression stopped at the limit of %d bytes", maxRequestBytes)

// boundedGzipReader is a gzip reader that yields at most one byte more than
// maxRequestBytes (so that connect sees the message is too large) and then
// fails, instead of inflating the rest of a bomb.
type boundedGzipReader struct {
	zr    gzip.Reader
	ready bool // zr has read a header
	left  int64
}

func (d *boundedGzipReader) Reset(r io.Reader) error {
	d.left = maxRequestBytes + 1
	err := d.zr.Reset(r)
	d.ready = d.ready || err == nil
	return err
}

func (d *boundedGzipReader) Read(p []byte) (int, error) {
	if d.left <= 0 {
		return 0, errDecompressedTooLarge
	}
	if int64(len(p)) > d.left {
		p = p[:d.left]
	}
	n, err := d.zr.Read(p)
	d.left -= int64(n)
	return n, err
}

func (d *boundedGzipReader) Close() error {
	if !d.ready {
		return nil
	}
	return d.zr.Close()
}

// limitInFlight serves at most unary requests and streams requests at once,
// counted apart, and answers the rest at once with ResourceExhausted "too
// many requests in flight; retry later" in the caller's protocol: HTTP 429
// and a JSON error for Connect unary calls, a trailers-only response with
// grpc-status 8 for gRPC and gRPC-Web, an end-of-stream error for Connect
// streams. It also caps each request body at maxRequestBytes.
//
// A request is a stream when the method its path names ("/skiff.v1.PodService/Watch")
// is declared streaming in its service's descriptor; paths that name no
// registered method (/healthz, typos) pass through uncounted and unread.
//
// A unary request takes its seat only once its whole body has arrived, so a
// client trickling a body holds no seat: the server's read timeout ends it.
// Until then its body is charged to a budget of maxBufferedBodyBytes, which
// bounds the memory such bodies hold. A stream takes its seat at once (its
// body never has to end) and its write deadline, which bounds unary calls,
// is lifted: a watch lives for hours.
func limitInFlight(h http.Handler, unary, streams int) http.Handler {
	return newInFlight(h, unary, streams, maxBufferedBodyBytes)
}

var (
	errInFlight     = errors.New("too many requests in flight; retry later")
	errBodyBudget   = errors.New("too many request bytes in flight; retry later")
	errBodyTooLarge = fmt.Errorf("request body is larger than the limit of %d bytes", maxRequestBytes)
)

type inFlight struct {
	next        http.Handler
	unary       chan struct{} // a seat is a slot in the buffer
	streams     chan struct{}
	buffered    atomic.Int64 // body bytes held by unary requests
	maxBuffered int64
	errorWriter *connect.ErrorWriter
}

func newInFlight(h http.Handler, unary, streams int, maxBuffered int64) *inFlight {
	return &inFlight{
		next:        h,
		unary:       make(chan struct{}, unary),
		streams:     make(chan struct{}, streams),
		maxBuffered: maxBuffered,
		errorWriter: connect.NewErrorWriter(),
	}
}

func (l *inFlight) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	stream, ok := isStream(r.URL.Path)
	if !ok {
		l.next.ServeHTTP(w, r)
		return
	}
	if r.ContentLength > maxRequestBytes {
		l.fail(w, r, connect.CodeResourceExhausted, fmt.Errorf(
			"request body is %d bytes, the limit is %d", r.ContentLength, maxRequestBytes))
		return
	}
	body := http.MaxBytesReader(w, r.Body, maxRequestBytes)
	if stream {
		l.serveStream(w, r, body)
		return
	}
	data, err := l.readBody(body)
	defer l.buffered.Add(-int64(cap(data)))
	if err != nil {
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			l.fail(w, r, connect.CodeResourceExhausted, errBodyTooLarge)
		case errors.Is(err, errBodyBudget):
			w.Header().Set("Retry-After", "1")
			l.fail(w, r, connect.CodeResourceExhausted, err)
		case errors.Is(err, os.ErrDeadlineExceeded):
			l.fail(w, r, connect.CodeDeadlineExceeded, errors.New("the request body did not arrive within the server's read timeout"))
		default:
			l.fail(w, r, connect.CodeCanceled, fmt.Errorf("read request body: %w", err))
		}
		return
	}
	select {
	case l.unary <- struct{}{}:
		defer func() { <-l.unary }()
	default:
		w.Header().Set("Retry-After", "1")
		l.fail(w, r, connect.CodeResourceExhausted, errInFlight)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(data))
	l.next.ServeHTTP(w, r)
}

func (l *inFlight) serveStream(w http.ResponseWriter, r *http.Request, body io.ReadCloser) {
	select {
	case l.streams <- struct{}{}:
		defer func() { <-l.streams }()
	default:
		w.Header().Set("Retry-After", "1")
		l.fail(w, r, connect.CodeResourceExhausted, errInFlight)
		return
	}
	// The server's write timeout bounds a unary call; a watch lives for
	// hours. (net/http lifts the read deadline itself once the request's
	// body has been read.) Writers that cannot set deadlines have none.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	r.Body = body
	l.next.ServeHTTP(w, r)
}

// readBody reads a request body, charging what it holds to the budget; the
// caller gives back cap of what it returns, also on error.
func (l *inFlight) readBody(body io.Reader) ([]byte, error) {
	// Grow as bytes arrive; never allocate what Content-Length promises.
	buf := make([]byte, 0, 512)
	l.buffered.Add(int64(cap(buf)))
	for {
		if len(buf) == cap(buf) {
			grown := slices.Grow(buf, cap(buf))
			if l.buffered.Add(int64(cap(grown)-cap(buf))) > l.maxBuffered {
				l.buffered.Add(-int64(cap(grown) - cap(buf)))
				return buf, errBodyBudget
			}
			buf = grown
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func (l *inFlight) fail(w http.ResponseWriter, r *http.Request, code connect.Code, err error) {
	_ = l.errorWriter.Write(w, r, connect.NewError(code, err))
}

// isStream reports whether path names a streaming method of a registered
// service, and whether it names a method at all.
func isStream(path string) (stream, ok bool) {
	service, method, found := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if !found || !protoreflect.FullName(service).IsValid() {
		return false, false
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		return false, false
	}
	sd, isService := d.(protoreflect.ServiceDescriptor)
	if !isService {
		return false, false
	}
	md := sd.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		return false, false
	}
	return md.IsStreamingServer() || md.IsStreamingClient(), true
}

// checkObjectSize refuses an object larger, encoded, than maxObjectBytes.
func checkObjectSize(obj proto.Message) error {
	if n := proto.Size(obj); n > maxObjectBytes {
		return fmt.Errorf("object is too large: %d bytes, the limit is %d", n, maxObjectBytes)
	}
	return nil
}

// validateMetaLimits checks the size Kubernetes puts on the annotations
// of an object, all of them together. Keys are checked in validateMeta.
func validateMetaLimits(fe *fieldErrors, m *skiffv1.ObjectMeta) {
	total := 0
	for k, v := range m.GetAnnotations() {
		total += len(k) + len(v)
	}
	if total > maxAnnotationBytes {
		fe.add("metadata.annotations", "Too long: must have at most %d bytes", maxAnnotationBytes)
	}
}

// shorten cuts a long key in an error message: the reader needs to know
// which key, not to read a megabyte of it back.
func shorten(s string) string {
	const limit = 320
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "..."
}
