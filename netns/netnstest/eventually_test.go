package netnstest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// fatalTB records Fatalf instead of ending the test.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
}

func TestEventually(t *testing.T) {
	calls := 0
	Eventually(t, 5*time.Second, func() bool { calls++; return calls == 3 }, func() string { return "three calls" })
	if calls != 3 {
		t.Errorf("cond called %d times, want 3", calls)
	}
	f := &fatalTB{TB: t}
	n := 0
	Eventually(f, 20*time.Millisecond, func() bool { n++; return n > 1000 || f.msg != "" }, func() string { return "never" })
	if !strings.Contains(f.msg, "after 20ms: never") {
		t.Errorf("a condition that never holds reported %q", f.msg)
	}
}
