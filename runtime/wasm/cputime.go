package wasm

import (
	"time"

	"golang.org/x/sys/unix"
)

// threadClock is the CPU-time clock of one OS thread of this process,
// readable from any thread: Linux's MAKE_THREAD_CPUCLOCK(tid,
// CPUCLOCK_SCHED), the clock pthread_getcpuclockid returns.
type threadClock int32

// currentThreadClock returns the clock of the calling thread. The caller
// must be locked to its thread (runtime.LockOSThread) for as long as it
// reads the clock, or the thread may run other goroutines, or end.
func currentThreadClock() threadClock {
	tid := unix.Gettid()
	return threadClock(int32(^uint32(tid)<<3) | 6) // ~tid << 3 | CPUCLOCK_PERTHREAD_MASK | CPUCLOCK_SCHED
}

// read returns the CPU time the thread has used, or 0 if it cannot be read.
func (c threadClock) read() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(int32(c), &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
