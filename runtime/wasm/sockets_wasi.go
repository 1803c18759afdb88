package wasm

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"golang.org/x/sys/unix"
)

// sockOp serves a WASI call on one of the container's sockets. It returns
// false when the call is not about one (wazero's function serves it);
// otherwise it has written the errno to stack[0].
type sockOp func(t *sockTable, mod api.Module, stack []uint64) bool

// sockOps are the wrapped functions of wasi_snapshot_preview1.
var sockOps = map[string]sockOp{
	"fd_close":            (*sockTable).fdClose,
	"fd_read":             (*sockTable).fdRead,
	"fd_write":            (*sockTable).fdWrite,
	"fd_fdstat_get":       (*sockTable).fdFdstatGet,
	"fd_fdstat_set_flags": (*sockTable).fdFdstatSetFlags,
	"fd_filestat_get":     (*sockTable).fdFilestatGet,
	"fd_prestat_get":      refuse(errnoBadf), // hidden pre-opens: the scan ends here
	"fd_prestat_dir_name": refuse(errnoBadf),
	"sock_accept":         (*sockTable).sockAccept,
	"sock_recv":           (*sockTable).sockRecv,
	"sock_send":           (*sockTable).sockSend,
	"sock_shutdown":       (*sockTable).sockShutdown,
	"poll_oneoff":         (*sockTable).pollOneoff,
	// File operations a socket does not have.
	"fd_advise":             refuse(errnoSpipe),
	"fd_allocate":           refuse(errnoNotsup),
	"fd_datasync":           refuse(errnoInval),
	"fd_sync":               refuse(errnoInval),
	"fd_seek":               refuse(errnoSpipe),
	"fd_tell":               refuse(errnoSpipe),
	"fd_pread":              refuse(errnoSpipe),
	"fd_pwrite":             refuse(errnoSpipe),
	"fd_readdir":            refuse(errnoNotdir),
	"fd_renumber":           (*sockTable).fdRenumber,
	"fd_fdstat_set_rights":  refuse(errnoNotsup),
	"fd_filestat_set_size":  refuse(errnoInval),
	"fd_filestat_set_times": refuse(errnoNotsup),
}

const (
	errnoNotdir = 54
	errnoSpipe  = 70
)

// instantiateWASI instantiates wasi_snapshot_preview1: wazero's functions,
// with those of sockOps wrapped so that the container's sockets are served
// here.
func instantiateWASI(ctx context.Context, rt wazero.Runtime) error {
	plain := rt.NewHostModuleBuilder(wasiModule)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(plain)
	compiled, err := plain.Compile(ctx)
	if err != nil {
		return err
	}
	defer compiled.Close(ctx)
	defs := compiled.ExportedFunctions()

	b := rt.NewHostModuleBuilder(wasiModule)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(b)
	for name, op := range sockOps {
		def, ok := defs[name]
		if !ok {
			return fmt.Errorf("wazero's %s has no function %s", wasiModule, name)
		}
		inner, ok := def.GoFunction().(api.GoModuleFunction)
		if !ok {
			return fmt.Errorf("wazero's %s.%s is not a Go module function", wasiModule, name)
		}
		b.NewFunctionBuilder().
			WithGoModuleFunction(wrapSockOp(op, inner), def.ParamTypes(), def.ResultTypes()).
			WithParameterNames(def.ParamNames()...).
			WithResultNames(def.ResultNames()...).
			Export(name)
	}
	_, err = b.Instantiate(ctx)
	return err
}

func wrapSockOp(op sockOp, inner api.GoModuleFunction) api.GoModuleFunc {
	return func(ctx context.Context, mod api.Module, stack []uint64) {
		if t, _ := ctx.Value(sockTableKey{}).(*sockTable); t != nil && op(t, mod, stack) {
			return
		}
		inner.Call(ctx, mod, stack)
	}
}

// refuse answers errno for a call on a socket.
func refuse(errno uint32) sockOp {
	return func(t *sockTable, _ api.Module, stack []uint64) bool {
		if t.socks[fdArg(stack[0])] == nil {
			return false
		}
		stack[0] = uint64(errno)
		return true
	}
}

func fdArg(v uint64) int32 { return int32(uint32(v)) }

func (t *sockTable) get(v uint64) *sock { return t.socks[fdArg(v)] }

func (t *sockTable) fdRenumber(_ api.Module, stack []uint64) bool {
	if t.get(stack[0]) == nil && t.get(stack[1]) == nil {
		return false
	}
	stack[0] = errnoNotsup
	return true
}

func (t *sockTable) fdClose(_ api.Module, stack []uint64) bool {
	fd := fdArg(stack[0])
	s := t.socks[fd]
	if s == nil {
		return false
	}
	s.close()
	delete(t.socks, fd)
	stack[0] = errnoSuccess
	return true
}

// maxIovecs bounds the buffers of one read or write (Linux's IOV_MAX).
const maxIovecs = 1024

// iovecs returns views of guest memory for the count iovecs at ptr.
func iovecs(mem api.Memory, ptr, count uint32) ([][]byte, uint32) {
	if count > maxIovecs {
		return nil, errnoInval
	}
	raw, ok := mem.Read(ptr, count*8)
	if !ok {
		return nil, errnoFault
	}
	bufs := make([][]byte, 0, count)
	for i := uint32(0); i < count; i++ {
		off := binary.LittleEndian.Uint32(raw[i*8:])
		n := binary.LittleEndian.Uint32(raw[i*8+4:])
		b, ok := mem.Read(off, n)
		if !ok {
			return nil, errnoFault
		}
		if n > 0 {
			bufs = append(bufs, b)
		}
	}
	return bufs, errnoSuccess
}

// io runs op on s until it does not fail with EAGAIN, waiting for events
// in between unless the guest asked for non-blocking calls.
func (t *sockTable) io(s *sock, events int16, op func() (int, error)) (int, uint32) {
	for {
		n, err := op()
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN && !s.nonblock {
			if e := t.wait(s.fd, events); e != errnoSuccess {
				return 0, e
			}
			continue
		}
		if err != nil {
			return 0, errnoOf(err)
		}
		return n, errnoSuccess
	}
}

// putResult writes a u32 result and the errno to the stack.
func putResult(mod api.Module, stack []uint64, ptr uint32, n int, errno uint32) bool {
	if errno == errnoSuccess && !mod.Memory().WriteUint32Le(ptr, uint32(n)) {
		errno = errnoFault
	}
	stack[0] = uint64(errno)
	return true
}

func (t *sockTable) fdRead(mod api.Module, stack []uint64) bool {
	return t.recv(mod, stack, uint32(stack[1]), uint32(stack[2]), 0, uint32(stack[3]), 0)
}

func (t *sockTable) sockRecv(mod api.Module, stack []uint64) bool {
	var flags int
	if stack[3]&riRecvPeek != 0 {
		flags |= unix.MSG_PEEK
	}
	if stack[3]&riRecvWaitall != 0 {
		flags |= unix.MSG_WAITALL
	}
	return t.recv(mod, stack, uint32(stack[1]), uint32(stack[2]), flags, uint32(stack[4]), uint32(stack[5]))
}

// recv reads into the iovecs; roFlags, when not 0, gets the (empty)
// output flags of sock_recv.
func (t *sockTable) recv(mod api.Module, stack []uint64, iovs, count uint32, flags int, nPtr, roFlags uint32) bool {
	s := t.get(stack[0])
	if s == nil {
		return false
	}
	bufs, errno := iovecs(mod.Memory(), iovs, count)
	if errno != errnoSuccess {
		stack[0] = uint64(errno)
		return true
	}
	n, errno := t.io(s, unix.POLLIN, func() (int, error) {
		n, _, _, _, err := unix.RecvmsgBuffers(s.fd, bufs, nil, flags)
		return n, err
	})
	if errno == errnoSuccess && roFlags != 0 && !mod.Memory().WriteUint16Le(roFlags, 0) {
		errno = errnoFault
	}
	return putResult(mod, stack, nPtr, n, errno)
}

func (t *sockTable) fdWrite(mod api.Module, stack []uint64) bool {
	return t.send(mod, stack, uint32(stack[1]), uint32(stack[2]), uint32(stack[3]))
}

func (t *sockTable) sockSend(mod api.Module, stack []uint64) bool {
	return t.send(mod, stack, uint32(stack[1]), uint32(stack[2]), uint32(stack[4]))
}

func (t *sockTable) send(mod api.Module, stack []uint64, iovs, count, nPtr uint32) bool {
	s := t.get(stack[0])
	if s == nil {
		return false
	}
	bufs, errno := iovecs(mod.Memory(), iovs, count)
	if errno != errnoSuccess {
		stack[0] = uint64(errno)
		return true
	}
	n, errno := t.io(s, unix.POLLOUT, func() (int, error) {
		return unix.SendmsgBuffers(s.fd, bufs, nil, nil, unix.MSG_NOSIGNAL)
	})
	return putResult(mod, stack, nPtr, n, errno)
}

func (t *sockTable) sockAccept(mod api.Module, stack []uint64) bool {
	s := t.get(stack[0])
	if s == nil {
		return false
	}
	if !s.listener {
		stack[0] = errnoInval
		return true
	}
	if len(t.socks) >= maxSockets || t.next < connFDBase {
		stack[0] = errnoMfile
		return true
	}
	var conn int
	_, errno := t.io(s, unix.POLLIN, func() (int, error) {
		fd, _, err := unix.Accept4(s.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		conn = fd
		return 0, err
	})
	if errno != errnoSuccess {
		stack[0] = uint64(errno)
		return true
	}
	fd := t.next
	if !mod.Memory().WriteUint32Le(uint32(stack[2]), uint32(fd)) {
		unix.Close(conn)
		stack[0] = errnoFault
		return true
	}
	t.next++
	t.socks[fd] = &sock{fd: conn, nonblock: stack[1]&fdflagNonblock != 0}
	stack[0] = errnoSuccess
	return true
}

func (t *sockTable) sockShutdown(_ api.Module, stack []uint64) bool {
	s := t.get(stack[0])
	if s == nil {
		return false
	}
	var how int
	switch stack[1] & (sdflagRd | sdflagWr) {
	case sdflagRd:
		how = unix.SHUT_RD
	case sdflagWr:
		how = unix.SHUT_WR
	case sdflagRd | sdflagWr:
		how = unix.SHUT_RDWR
	default:
		stack[0] = errnoInval
		return true
	}
	stack[0] = errnoSuccess
	if err := unix.Shutdown(s.fd, how); err != nil {
		stack[0] = uint64(errnoOf(err))
	}
	return true
}

func (t *sockTable) fdFdstatGet(mod api.Module, stack []uint64) bool {
	s := t.get(stack[0])
	if s == nil {
		return false
	}
	var st [24]byte
	st[0] = filetypeSockStrm
	if s.nonblock {
		binary.LittleEndian.PutUint16(st[2:], fdflagNonblock)
	}
	binary.LittleEndian.PutUint64(st[8:], allRights)
	binary.LittleEndian.PutUint64(st[16:], allRights)
	stack[0] = errnoSuccess
	if !mod.Memory().Write(uint32(stack[1]), st[:]) {
		stack[0] = errnoFault
	}
	return true
}

func (t *sockTable) fdFdstatSetFlags(_ api.Module, stack []uint64) bool {
	s := t.get(stack[0])
	if s == nil {
		return false
	}
	s.nonblock = stack[1]&fdflagNonblock != 0
	stack[0] = errnoSuccess
	return true
}

func (t *sockTable) fdFilestatGet(mod api.Module, stack []uint64) bool {
	if t.get(stack[0]) == nil {
		return false
	}
	var st [64]byte
	st[16] = filetypeSockStrm
	stack[0] = errnoSuccess
	if !mod.Memory().Write(uint32(stack[1]), st[:]) {
		stack[0] = errnoFault
	}
	return true
}

// maxSubscriptions bounds one poll_oneoff of a container with sockets:
// more than its sockets, stdin and a few timers could ever need.
const maxSubscriptions = 4 * maxSockets

// Layouts of poll_oneoff's records.
const (
	subscriptionSize = 48
	eventSize        = 32
)

// pollOneoff serves poll_oneoff when a subscription names one of the
// container's sockets: it waits in ppoll(2) on the sockets and stdin until
// one is ready, the earliest clock subscription is due, or the container
// is killed. Other descriptors (files, stdout) are ready at once, as
// wazero has them.
func (t *sockTable) pollOneoff(mod api.Module, stack []uint64) bool {
	in, out, n, resultN := uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[3])
	if n == 0 || uint64(n)*subscriptionSize > math.MaxUint32 {
		return false // wazero's answer (EINVAL, or EFAULT)
	}
	if n > maxSubscriptions {
		stack[0] = errnoInval // bounds what a guest makes the host allocate
		return true
	}
	mem := mod.Memory()
	subs, ok := mem.Read(in, n*subscriptionSize)
	if !ok {
		return false
	}
	ours := false
	for i := uint32(0); i < n && !ours; i++ {
		sub := subs[i*subscriptionSize:]
		typ := sub[8]
		ours = (typ == eventFdRead || typ == eventFdWrite) && t.socks[int32(binary.LittleEndian.Uint32(sub[16:]))] != nil
	}
	if !ours {
		return false
	}
	// Copy the subscriptions: wazero's Read is a view, and the events may
	// overlap them.
	subs = append([]byte(nil), subs...)
	events, ok := mem.Read(out, n*eventSize)
	if !ok {
		stack[0] = errnoFault
		return true
	}

	start := guestNanotime()
	deadline := int64(math.MaxInt64) // none
	pfds := make([]unix.PollFd, 0, n+1)
	pidx := make([]int, n) // index in pfds, or -1 (ready at once), or -2 (clock)
	immediate := false
	for i := uint32(0); i < n; i++ {
		sub := subs[i*subscriptionSize:]
		switch typ := sub[8]; typ {
		case eventClock:
			pidx[i] = -2
			d, errno := clockDeadline(sub, start)
			if errno != errnoSuccess {
				stack[0] = uint64(errno)
				return true
			}
			deadline = min(deadline, d)
		case eventFdRead, eventFdWrite:
			fd := int32(binary.LittleEndian.Uint32(sub[16:]))
			ev := int16(unix.POLLIN)
			if typ == eventFdWrite {
				ev = unix.POLLOUT
			}
			switch s := t.socks[fd]; {
			case s != nil:
				pidx[i] = len(pfds)
				pfds = append(pfds, unix.PollFd{Fd: int32(s.fd), Events: ev})
			case fd == 0 && typ == eventFdRead && t.stdin >= 0:
				pidx[i] = len(pfds)
				pfds = append(pfds, unix.PollFd{Fd: int32(t.stdin), Events: ev})
			default:
				pidx[i] = -1
				immediate = true
			}
		default:
			stack[0] = errnoInval
			return true
		}
	}
	pfds = append(pfds, unix.PollFd{Fd: int32(t.wakeFD), Events: unix.POLLIN})

	for {
		var ts *unix.Timespec
		switch {
		case immediate:
			ts = &unix.Timespec{}
		case deadline != math.MaxInt64:
			v := unix.NsecToTimespec(max(0, deadline-guestNanotime()))
			ts = &v
		}
		_, err := unix.Ppoll(pfds, ts, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			stack[0] = uint64(errnoOf(err))
			return true
		}
		break
	}

	now := guestNanotime()
	var nevents uint32
	for i := uint32(0); i < n; i++ {
		sub := subs[i*subscriptionSize:]
		var errno uint16
		var flags uint16
		switch j := pidx[i]; {
		case j == -2:
			if d, _ := clockDeadline(sub, start); now < d {
				continue
			}
		case j == -1:
		default:
			re := pfds[j].Revents
			if re == 0 {
				continue
			}
			if re&unix.POLLNVAL != 0 {
				errno = errnoBadf
			}
			if re&unix.POLLHUP != 0 {
				flags = eventHangup
			}
		}
		ev := events[nevents*eventSize : (nevents+1)*eventSize]
		clear(ev)
		copy(ev[0:8], sub[0:8]) // userdata
		binary.LittleEndian.PutUint16(ev[8:], errno)
		ev[10] = sub[8]
		binary.LittleEndian.PutUint16(ev[24:], flags)
		nevents++
	}
	stack[0] = errnoSuccess
	if !mem.WriteUint32Le(resultN, nevents) {
		stack[0] = errnoFault
	}
	return true
}

// clockDeadline is the guest-monotonic time at which the clock
// subscription sub is due, given the guest-monotonic time now.
func clockDeadline(sub []byte, now int64) (int64, uint32) {
	id := binary.LittleEndian.Uint32(sub[16:])
	timeout := binary.LittleEndian.Uint64(sub[24:])
	if timeout > math.MaxInt64 {
		timeout = math.MaxInt64
	}
	if sub[40]&subclockAbstime == 0 {
		return satAdd(now, int64(timeout)), errnoSuccess
	}
	switch id {
	case clockMonotonic:
		return int64(timeout), errnoSuccess
	case clockRealtime:
		return satAdd(guestNanotime(), int64(timeout)-time.Now().UnixNano()), errnoSuccess
	}
	return 0, errnoInval
}

func satAdd(a, b int64) int64 {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// guestEpoch is the zero of the guests' monotonic clock.
var guestEpoch = time.Now()

// guestNanotime is the guests' monotonic clock (clock_time_get of
// CLOCK_MONOTONIC), in nanoseconds: the one poll_oneoff's absolute
// deadlines are read on.
func guestNanotime() int64 { return int64(time.Since(guestEpoch)) }

// reservedFS is the empty pre-opened directory that holds a listener's
// descriptor in wazero's table. The guest never sees it: the socket
// wrappers answer every call on that descriptor.
type reservedFS struct {
	experimentalsys.UnimplementedFS
}
