package wasm

import (
	"encoding/binary"
	"errors"
	"slices"
)

// Instantiating a module copies each of its active data segments into the
// new linear memory, evaluating the segment's offset expression first.
// Go's linker splits a program's data wherever a run of zeros is long
// enough, into tens of thousands of segments (32,200 for a small Go
// program, 786 KB in all): most of an instantiation's cost, paid by every
// container. mergeData rewrites such a module, before it is compiled, so
// that segments less than a page apart become one, the gap between them
// zeros, which the memory of a new instance holds there already. Memory
// after instantiation is the same byte for byte, and no page is touched
// that was not (a gap shorter than a page covers no page by itself).
//
// It rewrites only what it can prove the same: every segment active in
// memory 0 at an i32.const offset, none overlapping another (then their
// order does not matter), and no data count section (which code that
// names segments, memory.init and data.drop, requires). Anything else,
// or a binary it cannot read, it returns as it was; the compiler judges it.

// mergeGap is the largest gap between two segments that mergeData fills:
// under a page of 4 KiB.
const mergeGap = 4096 - 1

// Wasm binary format constants.
const (
	sectionData      = 11
	sectionDataCount = 12
	opI32Const       = 0x41
	opEnd            = 0x0b
)

// dataSegment is an active segment of memory 0.
type dataSegment struct {
	offset uint64
	init   []byte
}

// mergeData returns bin with its data segments merged, or bin itself when
// there is nothing to merge or it cannot be proven the same.
func mergeData(bin []byte) []byte {
	if len(bin) < 8 {
		return bin
	}
	r := &reader{b: bin, i: 8}
	header, dataStart, dataEnd := 0, -1, -1
	for r.i < len(r.b) {
		at := r.i
		id := r.byte()
		size := r.u32()
		if r.err != nil || uint64(size) > uint64(len(r.b)-r.i) {
			return bin
		}
		switch id {
		case sectionDataCount:
			return bin
		case sectionData:
			if dataStart >= 0 {
				return bin
			}
			header, dataStart, dataEnd = at, r.i, r.i+int(size)
		}
		r.i += int(size)
	}
	if dataStart < 0 {
		return bin
	}
	segs, ok := readDataSection(bin[dataStart:dataEnd])
	if !ok || len(segs) < 2 {
		return bin
	}
	merged := mergeSegments(segs)
	if len(merged) == len(segs) {
		return bin
	}
	body := binary.AppendUvarint(nil, uint64(len(merged)))
	for _, s := range merged {
		body = append(body, 0, opI32Const)
		body = appendSLEB(body, int64(int32(uint32(s.offset))))
		body = append(body, opEnd)
		body = binary.AppendUvarint(body, uint64(len(s.init)))
		body = append(body, s.init...)
	}
	out := make([]byte, 0, len(bin)-(dataEnd-dataStart)+len(body)+6)
	out = append(out, bin[:header]...)
	out = append(out, sectionData)
	out = binary.AppendUvarint(out, uint64(len(body)))
	out = append(out, body...)
	return append(out, bin[dataEnd:]...)
}

// readDataSection reads a data section's segments; false when one is not
// active in memory 0 at an i32.const offset, or the section is malformed.
func readDataSection(sec []byte) ([]dataSegment, bool) {
	r := &reader{b: sec}
	n := r.u32()
	if r.err != nil || uint64(n) > uint64(len(sec)) { // each segment takes bytes
		return nil, false
	}
	segs := make([]dataSegment, 0, n)
	for range n {
		if flag := r.u32(); flag != 0 || r.byte() != opI32Const {
			return nil, false
		}
		off := r.i32()
		if r.byte() != opEnd {
			return nil, false
		}
		size := r.u32()
		if r.err != nil || uint64(size) > uint64(len(sec)-r.i) {
			return nil, false
		}
		segs = append(segs, dataSegment{offset: uint64(uint32(off)), init: sec[r.i : r.i+int(size)]})
		r.i += int(size)
	}
	if r.err != nil || r.i != len(sec) {
		return nil, false
	}
	return segs, true
}

// mergeSegments sorts segs by offset and joins those at most mergeGap
// apart; segs is returned as it is when two overlap or one ends past 4 GiB.
func mergeSegments(segs []dataSegment) []dataSegment {
	sorted := slices.Clone(segs)
	slices.SortStableFunc(sorted, func(a, b dataSegment) int {
		switch {
		case a.offset < b.offset:
			return -1
		case a.offset > b.offset:
			return 1
		}
		return 0
	})
	var out []dataSegment
	var cur []byte
	var start, end uint64
	for i, s := range sorted {
		sEnd := s.offset + uint64(len(s.init))
		if sEnd > 1<<32 || i > 0 && s.offset < end {
			return segs // out of bounds, or overlapping: order matters
		}
		if i > 0 && s.offset-end <= mergeGap {
			cur = append(cur, make([]byte, s.offset-end)...)
			cur = append(cur, s.init...)
			end = sEnd
			continue
		}
		if i > 0 {
			out = append(out, dataSegment{offset: start, init: cur})
		}
		cur = append([]byte(nil), s.init...)
		start, end = s.offset, sEnd
	}
	return append(out, dataSegment{offset: start, init: cur})
}

// appendSLEB appends v as a signed LEB128 (binary.AppendVarint is
// zig-zag, not LEB128; AppendUvarint is the unsigned LEB128).
func appendSLEB(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 && c&0x40 == 0 || v == -1 && c&0x40 != 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// reader reads LEB128 numbers and bytes off b, remembering the first
// error; reads past it give zeros.
type reader struct {
	b   []byte
	i   int
	err error
}

var errTruncated = errors.New("truncated module")

func (r *reader) byte() byte {
	if r.err != nil || r.i >= len(r.b) {
		r.err = errTruncated
		return 0
	}
	r.i++
	return r.b[r.i-1]
}

// u32 reads an unsigned LEB128 of at most 5 bytes.
func (r *reader) u32() uint32 {
	var v uint64
	for shift := 0; shift < 35; shift += 7 {
		c := r.byte()
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			if v > 1<<32-1 {
				r.err = errors.New("u32 out of range")
			}
			return uint32(v)
		}
	}
	r.err = errors.New("u32 too long")
	return 0
}

// i32 reads a signed LEB128 of at most 5 bytes.
func (r *reader) i32() int32 {
	var v int64
	for shift := 0; shift < 35; shift += 7 {
		c := r.byte()
		v |= int64(c&0x7f) << shift
		if c&0x80 == 0 {
			if c&0x40 != 0 {
				v |= -1 << (shift + 7)
			}
			if v < -1<<31 || v > 1<<31-1 {
				r.err = errors.New("i32 out of range")
			}
			return int32(v)
		}
	}
	r.err = errors.New("i32 too long")
	return 0
}
