package cluster

import (
	"strings"
	"testing"
	"time"
)

// BenchmarkFailureDetection measures, with the pool's real timing (not
// the tests' fast one), how long a server takes to see an agent that
// stopped without a word (as after kill -9) as failed, in a pool of one
// server and two agents on loopback. It reports the mean as s/detect.
func BenchmarkFailureDetection(b *testing.B) {
	var total time.Duration
	for i := 0; i < b.N; i++ {
		real := func(name string, role Role, peers ...string) *Pool {
			p, err := Join(Config{Name: name, Role: role, Bind: "127.0.0.1:0", Peers: peers})
			if err != nil {
				b.Fatal(err)
			}
			return p
		}
		s := real("s", RoleServer)
		a1 := real("a1", RoleAgent, s.Addr())
		a2 := real("a2", RoleAgent, s.Addr())
		for len(s.Members()) < 3 {
			<-s.Changed()
		}
		start := time.Now()
		_ = a1.Shutdown()
		for {
			ch := s.Changed()
			if strings.Contains(view(s.Members()), "a1/agent/failed") {
				break
			}
			select {
			case <-ch:
			case <-time.After(30 * time.Second):
				b.Fatalf("a1 not seen failed after 30s: %v", s.Members())
			}
		}
		total += time.Since(start)
		_ = a2.Shutdown()
		_ = s.Shutdown()
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/detect")
}
