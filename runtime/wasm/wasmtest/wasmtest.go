// Package wasmtest holds what the tests of the runtime and of the CRI
// server share: tiny WASI preview1 command modules, built so that tests can
// make a module write, exit, trap, spin or sleep without a toolchain, and
// Eventually, the one way they wait for a condition. Each module imports fd_write, proc_exit and poll_oneoff from
// wasi_snapshot_preview1, exports "memory" and "_start", and runs its steps
// in order; a module whose steps all complete returns from _start.
package wasmtest

import (
	"encoding/binary"
	"time"
)

// Step is one action of a module's _start.
type Step struct {
	kind stepKind
	fd   int32
	msg  string
	code uint32
	dur  time.Duration
}

type stepKind int

const (
	stepWrite stepKind = iota
	stepExit
	stepTrap
	stepSpin
	stepSleep
	stepGrow
	stepGrowBomb
)

// Write writes msg to the file descriptor fd (1 stdout, 2 stderr).
func Write(fd int, msg string) Step { return Step{kind: stepWrite, fd: int32(fd), msg: msg} }

// Exit calls proc_exit(code).
func Exit(code uint32) Step { return Step{kind: stepExit, code: code} }

// Trap executes the unreachable instruction.
func Trap() Step { return Step{kind: stepTrap} }

// Spin loops forever without calling the host.
func Spin() Step { return Step{kind: stepSpin} }

// Sleep sleeps for d with poll_oneoff on a relative monotonic clock.
func Sleep(d time.Duration) Step { return Step{kind: stepSleep, dur: d} }

// Grow grows the linear memory by pages (64 KiB each) and writes to every
// byte of them, so that they are resident; a refused growth traps.
func Grow(pages uint32) Step { return Step{kind: stepGrow, code: pages} }

// GrowBomb grows the linear memory 1 MiB at a time, writing to every byte,
// until memory.grow fails; then it traps.
func GrowBomb() Step { return Step{kind: stepGrowBomb} }

// Build returns a command module that runs steps.
func Build(steps ...Step) []byte { return build(true, nil, steps) }

// Reactor returns a module that exports no _start function.
func Reactor() []byte { return build(false, nil, nil) }

// Importing returns a command module that also imports the function
// module.name, of type () -> ().
func Importing(module, name string) []byte { return build(true, &[2]string{module, name}, nil) }

// Function indices of the imports.
const (
	fnFdWrite    = 0
	fnProcExit   = 1
	fnPollOneoff = 2
)

// Type indices.
const (
	typeI32       = 0 // (i32) -> ()
	typeI32x4_I32 = 1 // (i32 i32 i32 i32) -> i32
	typeVoid      = 2 // () -> ()
)

const dataBase = 1024 // where data segments start in linear memory

func build(withStart bool, extra *[2]string, steps []Step) []byte {
	var body, data []byte
	addr := uint32(dataBase)
	alloc := func(b []byte) uint32 {
		a := addr
		data = append(data, b...)
		addr += uint32(len(b))
		if pad := (8 - addr%8) % 8; pad > 0 {
			data = append(data, make([]byte, pad)...)
			addr += pad
		}
		return a
	}
	for _, s := range steps {
		switch s.kind {
		case stepWrite:
			msg := alloc([]byte(s.msg))
			iov := alloc(binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, msg), uint32(len(s.msg))))
			nwritten := alloc(make([]byte, 4))
			body = i32const(body, s.fd)
			body = i32const(body, int32(iov))
			body = i32const(body, 1)
			body = i32const(body, int32(nwritten))
			body = append(body, 0x10, fnFdWrite, 0x1a) // call fd_write; drop
		case stepExit:
			body = i32const(body, int32(s.code))
			body = append(body, 0x10, fnProcExit)
		case stepTrap:
			body = append(body, 0x00) // unreachable
		case stepGrow:
			body = growAndFill(body, int32(s.code))
		case stepGrowBomb:
			body = append(body, 0x03, 0x40) // loop
			body = growAndFill(body, 16)
			body = append(body, 0x0c, 0x00, 0x0b) // br 0; end
		case stepSpin:
			body = append(body, 0x03, 0x40, 0x0c, 0x00, 0x0b) // loop; br 0; end
		case stepSleep:
			sub := make([]byte, 48)                    // userdata u64, tag u8 (0: clock), clock id u32 @16, timeout u64 @24, precision u64 @32, flags u16 @40
			binary.LittleEndian.PutUint32(sub[16:], 1) // monotonic
			binary.LittleEndian.PutUint64(sub[24:], uint64(s.dur))
			in := alloc(sub)
			out := alloc(make([]byte, 32))
			nevents := alloc(make([]byte, 4))
			body = i32const(body, int32(in))
			body = i32const(body, int32(out))
			body = i32const(body, 1)
			body = i32const(body, int32(nevents))
			body = append(body, 0x10, fnPollOneoff, 0x1a)
		}
	}
	body = append(body, 0x0b) // end

	var m []byte
	m = append(m, "\x00asm\x01\x00\x00\x00"...)

	m = section(m, 1, vec(
		[]byte{0x60, 1, 0x7f, 0},                         // (i32) -> ()
		[]byte{0x60, 4, 0x7f, 0x7f, 0x7f, 0x7f, 1, 0x7f}, // (i32 i32 i32 i32) -> i32
		[]byte{0x60, 0, 0},                               // () -> ()
	))
	imports := [][]byte{
		importFunc("wasi_snapshot_preview1", "fd_write", typeI32x4_I32),
		importFunc("wasi_snapshot_preview1", "proc_exit", typeI32),
		importFunc("wasi_snapshot_preview1", "poll_oneoff", typeI32x4_I32),
	}
	startIdx := byte(3)
	if extra != nil {
		imports = append(imports, importFunc(extra[0], extra[1], typeVoid))
		startIdx++
	}
	m = section(m, 2, vec(imports...))
	m = section(m, 3, vec([]byte{typeVoid})) // one function: _start
	m = section(m, 5, vec([]byte{0x00, 1}))  // one memory, min 1 page
	exports := [][]byte{append(name("memory"), 0x02, 0)}
	if withStart {
		exports = append(exports, append(name("_start"), 0x00, startIdx))
	}
	m = section(m, 7, vec(exports...))
	code := append([]byte{1, 1, 0x7f}, body...) // one i32 local
	m = section(m, 10, vec(append(uleb(nil, uint32(len(code))), code...)))
	if len(data) > 0 {
		seg := []byte{0x00} // active, memory 0
		seg = i32const(seg, dataBase)
		seg = append(seg, 0x0b)
		seg = uleb(seg, uint32(len(data)))
		seg = append(seg, data...)
		m = section(m, 11, vec(seg))
	}
	return m
}

// growAndFill grows memory by pages, traps if that fails, and fills the
// new pages with ones.
func growAndFill(body []byte, pages int32) []byte {
	body = i32const(body, pages)
	body = append(body, 0x40, 0x00, 0x22, 0x00) // memory.grow 0; local.tee 0
	body = i32const(body, -1)
	body = append(body, 0x46, 0x04, 0x40, 0x00, 0x0b) // i32.eq; if; unreachable; end
	body = append(body, 0x20, 0x00)                   // local.get 0
	body = i32const(body, 16)
	body = append(body, 0x74) // i32.shl: the byte address of the old end
	body = i32const(body, 1)
	body = i32const(body, pages<<16)
	return append(body, 0xfc, 0x0b, 0x00) // memory.fill 0
}

func importFunc(module, field string, typeIdx byte) []byte {
	b := append(name(module), name(field)...)
	return append(b, 0x00, typeIdx)
}

func name(s string) []byte { return append(uleb(nil, uint32(len(s))), s...) }

func vec(items ...[]byte) []byte {
	b := uleb(nil, uint32(len(items)))
	for _, it := range items {
		b = append(b, it...)
	}
	return b
}

func section(m []byte, id byte, content []byte) []byte {
	m = append(m, id)
	m = uleb(m, uint32(len(content)))
	return append(m, content...)
}

func i32const(b []byte, v int32) []byte { return sleb(append(b, 0x41), int64(v)) }

func uleb(b []byte, v uint32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}

func sleb(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
