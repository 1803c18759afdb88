package pki

import (
	"context"
	"crypto"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a clock the test sets; each wait registered is reported on
// waits, so the test knows the loop is idle before it moves time.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters map[*fakeWaiter]bool
	waits   chan time.Duration
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(now time.Time) *fakeClock {
	return &fakeClock{now: now, waiters: map[*fakeWaiter]bool{}, waits: make(chan time.Duration, 100)}
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) After(d time.Duration) (<-chan time.Time, func()) {
	f.mu.Lock()
	w := &fakeWaiter{at: f.now.Add(d), ch: make(chan time.Time, 1)}
	f.waiters[w] = true
	f.mu.Unlock()
	f.waits <- d
	return w.ch, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.waiters, w)
	}
}

// set moves the clock to t and wakes the waits that are due.
func (f *fakeClock) set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = t
	for w := range f.waiters {
		if !w.at.After(t) {
			w.ch <- t
			delete(f.waiters, w)
		}
	}
}

// nextWait returns the length of the next wait the loop registers.
func (f *fakeClock) nextWait(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-f.waits:
		return d
	case <-time.After(10 * time.Second): // a guard against a hang, not a synchronisation
		t.Fatal("the renew loop registered no wait")
		return 0
	}
}

func TestRenew(t *testing.T) {
	ca := newTestCA(t, testNow)
	cred := newTestCred(t, ca, agentID, nil, testNow, 3*time.Hour)
	first := cred.cur.Load().leaf.SerialNumber
	due := renewAt(cred)
	if want := cred.NotBefore().Add(cred.NotAfter().Sub(cred.NotBefore()) * 2 / 3); due.Sub(want).Abs() > time.Second {
		t.Fatalf("renewAt = %v, want two thirds into the lifetime, %v", due, want)
	}
	clk := newFakeClock(testNow)
	var calls atomic.Int32
	errDown := errors.New("servers unreachable")
	renew := func(context.Context) ([]byte, crypto.Signer, error) {
		if calls.Add(1) == 1 {
			return nil, nil, errDown
		}
		certPEM, key := issueTest(t, ca, agentID, nil, clk.Now(), 3*time.Hour)
		return certPEM, key, nil
	}
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		renewer{clock: clk, retry: 10 * time.Second}.run(ctx, cred, renew, slog.New(slog.NewTextHandler(logs, nil)))
	}()
	defer func() { cancel(); <-done }()

	steps := []struct {
		name     string
		at       time.Time
		wantWait time.Duration // of the wait registered after the step
		calls    int32
	}{
		{"start: waits at most an hour at a time", testNow, time.Hour, 0},
		{"a second before two thirds", due.Add(-time.Second), time.Second, 0},
		{"at two thirds: renew fails, retry", due, 10 * time.Second, 1},
		{"retry succeeds: waits for the new certificate", due.Add(10 * time.Second), time.Hour, 2},
	}
	for i, s := range steps {
		if i > 0 {
			clk.set(s.at)
		}
		if got := clk.nextWait(t); got != s.wantWait {
			t.Errorf("%s: the loop waits %v, want %v", s.name, got, s.wantWait)
		}
		if got := calls.Load(); got != s.calls {
			t.Errorf("%s: renew called %d times, want %d", s.name, got, s.calls)
		}
	}
	leaf := cred.cur.Load().leaf
	if leaf.SerialNumber.Cmp(first) == 0 {
		t.Fatal("the credential still has its first certificate")
	}
	if want := due.Add(10 * time.Second).Add(3 * time.Hour); !cred.NotAfter().Equal(want) {
		t.Errorf("NotAfter after renewal = %v, want %v", cred.NotAfter(), want)
	}
	l := logs.String()
	if !strings.Contains(l, "level=WARN") || !strings.Contains(l, "servers unreachable") || !strings.Contains(l, "identity=node:n1") {
		t.Errorf("the failed renewal is not logged at Warn with the error and identity:\n%s", l)
	}
}

func TestRenewRetriesACertificateAlreadyDue(t *testing.T) {
	ca := newTestCA(t, testNow)
	cred := newTestCred(t, ca, agentID, nil, testNow, 3*time.Hour)
	clk := newFakeClock(renewAt(cred))
	stale, staleKey := issueTest(t, ca, agentID, nil, testNow, 3*time.Hour)
	var calls atomic.Int32
	renew := func(context.Context) ([]byte, crypto.Signer, error) {
		calls.Add(1)
		return stale, staleKey, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		renewer{clock: clk, retry: 10 * time.Second}.run(ctx, cred, renew, nil)
	}()
	if got := clk.nextWait(t); got != 10*time.Second || calls.Load() != 1 {
		t.Errorf("after a renewal that is due at once: wait %v after %d calls, want 10s after 1", got, calls.Load())
	}
	cancel()
	<-done
}
