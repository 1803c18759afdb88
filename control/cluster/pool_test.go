package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// memberlist's Shutdown does not wait for a probe in flight: it ends
	// by itself within the probe timeout (hashicorp/memberlist, state.go
	// probeNode), after the pool has stopped.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}

// waitView waits, on the pool's change notices, until want holds of what p
// sees; it fails the test after timeout with what p saw last.
func waitView(t *testing.T, p *Pool, timeout time.Duration, what string, want func([]Member) bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		changed := p.Changed()
		if want(p.Members()) {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%s: after %s the pool sees %v", what, timeout, p.Members())
		}
	}
}

func view(ms []Member) string {
	var parts []string
	for _, m := range ms {
		parts = append(parts, fmt.Sprintf("%s/%s/%s", m.Name, m.Role, m.State))
	}
	return strings.Join(parts, " ")
}

func join(t *testing.T, name string, role Role, peers ...string) *Pool {
	t.Helper()
	p, err := Join(Config{Name: name, Role: role, Bind: "127.0.0.1:0", Raft: name + "-raft:7000", API: name + "-api:7650", Peers: peers, fast: true})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPool: servers and an agent join one pool and see each other with
// their roles and addresses; a member that stops answering is seen failed,
// one that leaves is seen left.
func TestPool(t *testing.T) {
	s1 := join(t, "s1", RoleServer)
	defer s1.Shutdown()
	s2 := join(t, "s2", RoleServer, s1.Addr())
	defer s2.Shutdown()
	s3 := join(t, "s3", RoleServer, s2.Addr())
	a1 := join(t, "a1", RoleAgent, s1.Addr())
	all := "a1/agent/alive s1/server/alive s2/server/alive s3/server/alive"
	for _, p := range []*Pool{s1, s2, s3, a1} {
		waitView(t, p, 10*time.Second, "everyone sees everyone", func(ms []Member) bool { return view(ms) == all })
	}
	for _, m := range a1.Servers() {
		if m.Raft != m.Name+"-raft:7000" || m.API != m.Name+"-api:7650" || m.Gossip == "" {
			t.Errorf("agent's view of %s: %+v", m.Name, m)
		}
	}
	if got := len(a1.Servers()); got != 3 {
		t.Errorf("the agent sees %d live servers, want 3", got)
	}

	// s3 dies without a word: the others see it failed.
	if err := s3.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitView(t, s1, 15*time.Second, "s3 is seen failed", func(ms []Member) bool {
		return strings.Contains(view(ms), "s3/server/failed")
	})
	// s3 comes back under its name at another port, as a member restarted
	// after a crash: it is seen alive again.
	s3 = join(t, "s3", RoleServer, s1.Addr())
	defer s3.Shutdown()
	for _, p := range []*Pool{s1, s2} {
		waitView(t, p, 15*time.Second, "s3 is seen alive again", func(ms []Member) bool {
			return strings.Contains(view(ms), "s3/server/alive")
		})
	}
	// a1 leaves: the others see it left.
	if err := a1.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitView(t, s2, 15*time.Second, "a1 is seen left", func(ms []Member) bool {
		return strings.Contains(view(ms), "a1/agent/left")
	})
	if got := len(s2.Servers()); got != 3 {
		t.Errorf("s2 sees %d live servers, want 3: %v", got, s2.Members())
	}
}

func TestJoinErrors(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{Role: RoleServer, Bind: "127.0.0.1:0"}, "name: required value"},
		{Config{Name: "x", Role: "boss", Bind: "127.0.0.1:0"}, `role: unsupported value "boss"`},
		{Config{Name: "x", Role: RoleAgent, Bind: "127.0.0.1"}, `gossip address "127.0.0.1"`},
		{Config{Name: "x", Role: RoleAgent, Bind: "127.0.0.1:0", Peers: []string{"127.0.0.1:1"}, fast: true}, "join 127.0.0.1:1"},
		{Config{Name: "x", Role: RoleServer, Bind: "127.0.0.1:0", API: strings.Repeat("a", 600)}, "at most 497 fit"},
	}
	for _, tt := range tests {
		p, err := Join(tt.cfg)
		if err == nil {
			p.Shutdown()
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Join(%+v): %v, want an error with %q", tt.cfg, err, tt.want)
		}
	}
}
