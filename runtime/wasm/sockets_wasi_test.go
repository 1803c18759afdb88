package wasm

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/tetratelabs/wazero/api"
	"golang.org/x/sys/unix"
)

// fakeMemory is a guest's linear memory for calling the socket functions
// directly: the four methods they use.
type fakeMemory struct {
	api.Memory
	buf []byte
}

func (m *fakeMemory) Read(off, n uint32) ([]byte, bool) {
	if uint64(off)+uint64(n) > uint64(len(m.buf)) {
		return nil, false
	}
	return m.buf[off : off+n], true
}

func (m *fakeMemory) Write(off uint32, b []byte) bool {
	dst, ok := m.Read(off, uint32(len(b)))
	return ok && copy(dst, b) == len(b)
}

func (m *fakeMemory) WriteUint32Le(off, v uint32) bool {
	dst, ok := m.Read(off, 4)
	if ok {
		binary.LittleEndian.PutUint32(dst, v)
	}
	return ok
}

func (m *fakeMemory) WriteUint16Le(off uint32, v uint16) bool {
	dst, ok := m.Read(off, 2)
	if ok {
		binary.LittleEndian.PutUint16(dst, v)
	}
	return ok
}

type fakeModule struct {
	api.Module
	mem *fakeMemory
}

func (m fakeModule) Memory() api.Memory { return m.mem }

// socketTable is a table with one connection at guest fd 5, whose peer
// the test holds.
func socketTable(t *testing.T) (*sockTable, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	tab := &sockTable{socks: map[int32]*sock{5: {fd: fds[0], nonblock: true}}, next: connFDBase, stdin: -1, wakeFD: wake}
	t.Cleanup(func() {
		tab.closeAll()
		unix.Close(fds[1])
	})
	return tab, fds[1]
}

// subscribe writes subscriptions at 0 in mem: fd subscriptions for fds > 0
// (read), a relative clock for fd == -timeout in ms.
func subscribe(mem *fakeMemory, subs ...[3]int64) uint32 {
	for i, s := range subs { // userdata, type, fd or timeout
		b := mem.buf[i*subscriptionSize : (i+1)*subscriptionSize]
		clear(b)
		binary.LittleEndian.PutUint64(b, uint64(s[0]))
		b[8] = byte(s[1])
		if s[1] == eventClock {
			binary.LittleEndian.PutUint32(b[16:], clockMonotonic)
			binary.LittleEndian.PutUint64(b[24:], uint64(s[2]))
		} else {
			binary.LittleEndian.PutUint32(b[16:], uint32(s[2]))
		}
	}
	return uint32(len(subs))
}

// poll calls poll_oneoff on subscriptions at 0, events at 4096, the count
// at 8192, and returns errno and the events' userdata.
func poll(t *testing.T, tab *sockTable, mod fakeModule, n uint32) (uint64, []uint64) {
	t.Helper()
	stack := []uint64{0, 4096, uint64(n), 8192}
	if !tab.pollOneoff(mod, stack) {
		t.Fatal("poll_oneoff of a socket was left to wazero")
	}
	if stack[0] != errnoSuccess {
		return stack[0], nil
	}
	nevents := binary.LittleEndian.Uint32(mod.mem.buf[8192:])
	var ud []uint64
	for i := uint32(0); i < nevents; i++ {
		ud = append(ud, binary.LittleEndian.Uint64(mod.mem.buf[4096+i*eventSize:]))
	}
	return 0, ud
}

// TestPollOneoff: a socket's readiness, a timer, a kill and hostile
// subscription counts, on the socket functions called directly.
func TestPollOneoff(t *testing.T) {
	tab, peer := socketTable(t)
	mod := fakeModule{mem: &fakeMemory{buf: make([]byte, 16384)}}

	// Nothing to read: the 20ms timer fires, the socket does not.
	start := time.Now()
	errno, ud := poll(t, tab, mod, subscribe(mod.mem, [3]int64{1, eventFdRead, 5}, [3]int64{2, eventClock, int64(20 * time.Millisecond)}))
	if errno != 0 || len(ud) != 1 || ud[0] != 2 || time.Since(start) < 20*time.Millisecond {
		t.Errorf("idle socket and a 20ms timer: errno %d, events %v after %v; want the timer's alone after 20ms", errno, ud, time.Since(start))
	}
	// Data waiting: the socket is ready at once.
	unix.Write(peer, []byte("hello"))
	errno, ud = poll(t, tab, mod, subscribe(mod.mem, [3]int64{1, eventFdRead, 5}, [3]int64{2, eventClock, int64(time.Hour)}))
	if errno != 0 || len(ud) != 1 || ud[0] != 1 {
		t.Errorf("readable socket: errno %d, events %v; want the socket's", errno, ud)
	}
	// A kill wakes a poll that has no timer.
	done := make(chan []uint64, 1)
	buf := make([]byte, 16)
	unix.Read(tab.socks[5].fd, buf) // drain
	go func() {
		_, ud := poll(t, tab, mod, subscribe(mod.mem, [3]int64{1, eventFdRead, 5}))
		done <- ud
	}()
	tab.wake()
	select {
	case ud := <-done:
		if len(ud) != 0 {
			t.Errorf("woken by a kill: events %v, want none", ud)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a kill did not wake poll_oneoff")
	}
	// Too many subscriptions, or none.
	stack := []uint64{0, 4096, maxSubscriptions + 1, 8192}
	if !tab.pollOneoff(mod, stack) || stack[0] != errnoInval {
		t.Errorf("poll_oneoff of %d subscriptions = %d, want EINVAL", maxSubscriptions+1, stack[0])
	}
	// A subscription out of the guest's memory is wazero's to refuse.
	if tab.pollOneoff(mod, []uint64{uint64(len(mod.mem.buf)), 0, 1, 0}) {
		t.Error("poll_oneoff of subscriptions out of memory was not left to wazero")
	}
}

// TestSocketReadWrite: fd_write and fd_read on a connection, EAGAIN when
// non-blocking and empty, and EBADF after fd_close.
func TestSocketReadWrite(t *testing.T) {
	tab, peer := socketTable(t)
	mod := fakeModule{mem: &fakeMemory{buf: make([]byte, 4096)}}
	copy(mod.mem.buf[100:], "ping")
	binary.LittleEndian.PutUint32(mod.mem.buf[0:], 100) // iovec: buf
	binary.LittleEndian.PutUint32(mod.mem.buf[4:], 4)   // len
	stack := []uint64{5, 0, 1, 200}
	if !tab.fdWrite(mod, stack) || stack[0] != 0 || binary.LittleEndian.Uint32(mod.mem.buf[200:]) != 4 {
		t.Fatalf("fd_write = errno %d, %d bytes", stack[0], binary.LittleEndian.Uint32(mod.mem.buf[200:]))
	}
	got := make([]byte, 8)
	if n, _ := unix.Read(peer, got); string(got[:n]) != "ping" {
		t.Errorf("the peer read %q", got[:n])
	}
	stack = []uint64{5, 0, 1, 200}
	if !tab.fdRead(mod, stack) || stack[0] != errnoAgain {
		t.Errorf("fd_read of an empty non-blocking socket = errno %d, want EAGAIN", stack[0])
	}
	unix.Write(peer, []byte("pong"))
	stack = []uint64{5, 0, 1, 200}
	if !tab.fdRead(mod, stack) || stack[0] != 0 || string(mod.mem.buf[100:104]) != "pong" {
		t.Errorf("fd_read = errno %d, %q", stack[0], mod.mem.buf[100:104])
	}
	if !tab.fdClose(mod, []uint64{5}) || tab.socks[5] != nil {
		t.Error("fd_close left the socket in the table")
	}
	if tab.fdRead(mod, []uint64{5, 0, 1, 200}) {
		t.Error("a closed socket's descriptor is still served as a socket")
	}
}
