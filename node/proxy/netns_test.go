package proxy

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestCommandsRunInTheNamespace checks that a command the proxy starts
// from a thread inside a namespace (as iptables-restore is) runs in that
// namespace, not in the process's.
func TestCommandsRunInTheNamespace(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, nsDir(t), "node")
	p, err := New(Config{InNetNS: inNS(ns)})
	must(t, "new proxier", err)
	out, err := p.run(context.Background(), nil, "readlink", "/proc/self/ns/net")
	must(t, "readlink", err)
	var st syscall.Stat_t
	must(t, "stat "+ns, syscall.Stat(ns, &st))
	if got, want := strings.TrimSpace(string(out)), fmt.Sprintf("net:[%d]", st.Ino); got != want {
		t.Errorf("child's namespace %s, want the test's %s", got, want)
	}
	self, err := os.Readlink("/proc/self/ns/net")
	must(t, "readlink self", err)
	if strings.TrimSpace(string(out)) == self {
		t.Errorf("child ran in the test process's namespace %s", self)
	}
}
