package store

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The encodings below are the on-disk and in-log formats. They are small
// hand-written binary layouts (uvarints and length-prefixed byte strings) so
// that decoding is cheap and deterministic. Changing them changes the Raft log
// format: add a new op or a new version byte rather than altering an old one.

// op is the first byte of every command in the Raft log.
type op byte

const (
	opCreate op = 1
	opUpdate op = 2
	opDelete op = 3
	opTxn    op = 4 // a Txn: guards and several ops, see marshalTxn
)

func (o op) String() string {
	switch o {
	case opCreate:
		return "create"
	case opUpdate:
		return "update"
	case opDelete:
		return "delete"
	case opTxn:
		return "txn"
	}
	return fmt.Sprintf("op(%d)", byte(o))
}

// command is one state change proposed through Raft.
//
//	op byte | uvarint len(key) | key | uvarint rev | value (rest)
type command struct {
	op    op
	key   string
	rev   uint64 // expected ModRevision for update/delete; 0 = unconditional
	value []byte
}

func (c command) marshal() []byte {
	b := make([]byte, 0, 1+2*binary.MaxVarintLen64+len(c.key)+len(c.value))
	b = append(b, byte(c.op))
	b = appendBytes(b, []byte(c.key))
	b = binary.AppendUvarint(b, c.rev)
	return append(b, c.value...)
}

func unmarshalCommand(b []byte) (command, error) {
	if len(b) == 0 {
		return command{}, errors.New("decode command: empty")
	}
	d := decoder{b: b[1:]}
	c := command{op: op(b[0])}
	c.key = string(d.bytes())
	c.rev = d.uvarint()
	c.value = d.rest()
	if d.err != nil {
		return command{}, fmt.Errorf("decode command: %w", d.err)
	}
	return c, nil
}

// marshalTxn encodes a Txn as one command (opTxn). Ops reuse the op codes
// of single-key commands; unlike there, the value is length-prefixed.
//
//	opTxn | uvarint nGuards | guard... | uvarint nOps | op...
//	guard = kind byte | uvarint len(key) | key | uvarint rev
//	op    = op byte | uvarint len(key) | key | uvarint rev | uvarint len(value) | value
func marshalTxn(t Txn) []byte {
	n := 1 + 2*binary.MaxVarintLen64
	for _, g := range t.Guards {
		n += 1 + 2*binary.MaxVarintLen64 + len(g.key)
	}
	for _, o := range t.Ops {
		n += 1 + 3*binary.MaxVarintLen64 + len(o.key) + len(o.value)
	}
	b := make([]byte, 0, n)
	b = append(b, byte(opTxn))
	b = binary.AppendUvarint(b, uint64(len(t.Guards)))
	for _, g := range t.Guards {
		b = append(b, byte(g.kind))
		b = appendBytes(b, []byte(g.key))
		b = binary.AppendUvarint(b, g.rev)
	}
	b = binary.AppendUvarint(b, uint64(len(t.Ops)))
	for _, o := range t.Ops {
		b = append(b, byte(o.op))
		b = appendBytes(b, []byte(o.key))
		b = binary.AppendUvarint(b, o.rev)
		b = appendBytes(b, o.value)
	}
	return b
}

func unmarshalTxn(b []byte) (Txn, error) {
	if len(b) == 0 || op(b[0]) != opTxn {
		return Txn{}, errors.New("decode txn: not a txn")
	}
	d := decoder{b: b[1:]}
	var t Txn
	// Counts are bounded by the bytes left (each item takes at least
	// three), so a corrupt count cannot make a huge allocation.
	if n := d.count(3); n > 0 {
		t.Guards = make([]Guard, n)
		for i := range t.Guards {
			g := &t.Guards[i]
			g.kind = guardKind(d.byte())
			g.key = string(d.view())
			g.rev = d.uvarint()
		}
	}
	if n := d.count(4); n > 0 {
		t.Ops = make([]Op, n)
		for i := range t.Ops {
			o := &t.Ops[i]
			o.op = op(d.byte())
			o.key = string(d.view())
			o.rev = d.uvarint()
			o.value = d.bytes()
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return Txn{}, fmt.Errorf("decode txn: %w", d.err)
	}
	return t, nil
}

// kvRecord is the value stored under a key in the kv bucket.
//
//	uvarint createRev | uvarint modRev | value (rest)
func marshalKVRecord(kv KV) []byte {
	b := make([]byte, 0, 2*binary.MaxVarintLen64+len(kv.Value))
	b = binary.AppendUvarint(b, kv.CreateRevision)
	b = binary.AppendUvarint(b, kv.ModRevision)
	return append(b, kv.Value...)
}

func unmarshalKVRecord(key string, b []byte) (KV, error) {
	d := decoder{b: b}
	kv := KV{Key: key}
	kv.CreateRevision = d.uvarint()
	kv.ModRevision = d.uvarint()
	kv.Value = d.rest()
	if d.err != nil {
		return KV{}, fmt.Errorf("decode %s: %w", key, d.err)
	}
	return kv, nil
}

// event records in the history bucket, keyed by historyKey(rev, seq).
//
//	type byte | uvarint rev | kv | hasPrev byte | [prev kv]
//	kv = uvarint len(key) | key | uvarint create | uvarint mod | uvarint len(value) | value
func marshalEvent(ev Event) []byte {
	n := 2 + binary.MaxVarintLen64 + kvSize(&ev.KV) + kvSize(ev.PrevKV)
	b := make([]byte, 0, n)
	b = append(b, byte(ev.Type))
	b = binary.AppendUvarint(b, ev.Revision)
	b = appendKV(b, ev.KV)
	if ev.PrevKV == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	return appendKV(b, *ev.PrevKV)
}

func unmarshalEvent(b []byte) (Event, error) {
	if len(b) == 0 {
		return Event{}, errors.New("decode event: empty")
	}
	d := decoder{b: b[1:]}
	ev := Event{Type: EventType(b[0])}
	ev.Revision = d.uvarint()
	ev.KV = d.kv()
	if d.byte() == 1 {
		prev := d.kv()
		ev.PrevKV = &prev
	}
	if d.err != nil {
		return Event{}, fmt.Errorf("decode event: %w", d.err)
	}
	return ev, nil
}

// eventKey returns the key of an encoded event without decoding the values.
func eventKey(b []byte) (string, error) {
	if len(b) == 0 {
		return "", errors.New("decode event: empty")
	}
	d := decoder{b: b[1:]}
	d.uvarint()
	k := d.view()
	return string(k), d.err
}

func kvSize(kv *KV) int {
	if kv == nil {
		return 0
	}
	return 4*binary.MaxVarintLen64 + len(kv.Key) + len(kv.Value)
}

func appendKV(b []byte, kv KV) []byte {
	b = appendBytes(b, []byte(kv.Key))
	b = binary.AppendUvarint(b, kv.CreateRevision)
	b = binary.AppendUvarint(b, kv.ModRevision)
	return appendBytes(b, kv.Value)
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

// revKey is a revision as a bbolt key: big-endian, so that bbolt's byte
// order is revision order.
func revKey(rev uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 12), rev)
}

// historyKey is the history bucket key of the event number seq (from 0) of
// revision rev. The first event of a revision has the plain revKey(rev), as
// every event had before transactions; a Txn's further events add seq as 4
// big-endian bytes. Byte order is thus (revision, seq) order, and a seek to
// revKey(rev) lands on the first event of rev or of the next revision.
func historyKey(rev uint64, seq uint32) []byte {
	k := revKey(rev)
	if seq == 0 {
		return k
	}
	return binary.BigEndian.AppendUint32(k, seq)
}

// revOf returns the revision of a history bucket key.
func revOf(k []byte) uint64 {
	if len(k) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(k[:8])
}

func putUint64(v uint64) []byte { return revKey(v) }

func getUint64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

var errShort = errors.New("truncated record")

// decoder reads the layouts above. The first error sticks; results after it
// are zero. Byte slices it returns are copies, safe after a bbolt tx ends.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a uvarint count of items that take at least min bytes each
// and fails if fewer bytes are left than that many items need.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(len(d.b)/min) {
		d.err = errShort
		return 0
	}
	return int(n)
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = errShort
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

// view returns the next length-prefixed byte string without copying it.
func (d *decoder) view() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if uint64(len(d.b)) < n {
		d.err = errShort
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) bytes() []byte {
	p := d.view()
	if len(p) == 0 {
		return nil
	}
	return append([]byte{}, p...)
}

func (d *decoder) rest() []byte {
	if d.err != nil {
		return nil
	}
	var p []byte
	if len(d.b) > 0 {
		p = append([]byte{}, d.b...)
	}
	d.b = nil
	return p
}

func (d *decoder) kv() KV {
	var kv KV
	kv.Key = string(d.view())
	kv.CreateRevision = d.uvarint()
	kv.ModRevision = d.uvarint()
	kv.Value = d.bytes()
	return kv
}

// recordModRevision returns the ModRevision of a kvRecord without copying
// its value.
func recordModRevision(b []byte) (uint64, error) {
	d := decoder{b: b}
	d.uvarint()
	rev := d.uvarint()
	return rev, d.err
}
