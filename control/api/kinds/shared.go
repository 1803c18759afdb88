package kinds

import (
	"fmt"
	"sync"

	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// sharedEvents is the number of watch event messages a WatchEvents keeps:
// enough for every watch of a burst of writes to find the message it sends
// (a watch that falls further behind builds and encodes its own).
const sharedEvents = 4096

// WatchEvents builds each watch event message once for all the watches that
// send it, and encodes it once per codec: without it a hundred watchers of
// pods built and marshalled each event a hundred times.
//
// A message is named by its object and type. That holds because a
// Backend's Watch may hand the same object to many watches (it does, see
// Backend) and never changes an object once sent; and because an entry
// keeps its object, whose address is then not reused. The oldest entry is
// dropped once sharedEvents are held. The messages it returns are shared
// and must not be changed. Its methods are safe for concurrent use; a nil
// *WatchEvents shares nothing.
type WatchEvents struct {
	mu    sync.Mutex
	byObj map[eventKey]*sharedEvent
	byMsg map[proto.Message]*sharedEvent
	order [sharedEvents]*sharedEvent // a ring of the entries, oldest at next
	next  int
}

type eventKey struct {
	obj Object
	typ skiffv1.EventType
}

type sharedEvent struct {
	key eventKey
	msg proto.Message

	mu  sync.Mutex
	enc []encoding // one per codec that has encoded msg: a handful
}

type encoding struct {
	codec string
	data  []byte
	err   error
}

// event returns the message of an event of type t with object o, calling
// build for it the first time.
func (w *WatchEvents) event(t skiffv1.EventType, o Object, build func() proto.Message) proto.Message {
	if w == nil {
		return build()
	}
	key := eventKey{obj: o, typ: t}
	w.mu.Lock()
	defer w.mu.Unlock()
	if e, ok := w.byObj[key]; ok {
		return e.msg
	}
	if w.byObj == nil {
		w.byObj = make(map[eventKey]*sharedEvent, sharedEvents)
		w.byMsg = make(map[proto.Message]*sharedEvent, sharedEvents)
	}
	if old := w.order[w.next]; old != nil {
		delete(w.byObj, old.key)
		delete(w.byMsg, old.msg)
	}
	e := &sharedEvent{key: key, msg: build()} // setting two fields: cheap under the lock
	w.byObj[key] = e
	w.byMsg[e.msg] = e
	w.order[w.next] = e
	w.next = (w.next + 1) % sharedEvents
	return e.msg
}

// Encoding returns v encoded by the named codec when v is a message w
// shares, calling marshal only the first time the codec asks; shared is
// false, and nothing is called, for any other value. The bytes are shared:
// the caller copies them and never changes them.
func (w *WatchEvents) Encoding(v any, codec string, marshal func(proto.Message) ([]byte, error)) (data []byte, shared bool, err error) {
	m, ok := v.(proto.Message)
	if w == nil || !ok {
		return nil, false, nil
	}
	w.mu.Lock()
	e := w.byMsg[m]
	w.mu.Unlock()
	if e == nil {
		return nil, false, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, enc := range e.enc {
		if enc.codec == codec {
			return enc.data, true, enc.err
		}
	}
	data, err = marshal(e.msg)
	if err != nil {
		err = fmt.Errorf("marshal %s: %w", e.msg.ProtoReflect().Descriptor().FullName(), err)
	}
	e.enc = append(e.enc, encoding{codec: codec, data: data, err: err})
	return data, true, err
}
