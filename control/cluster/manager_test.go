package cluster

import (
	"testing"
	"time"

	"skiff.dev/skiff/control/store"
)

// TestDeadVoter: a voter missing from the pool goes only after deadAfter,
// one at a time, and only while the servers alive stay a majority of the
// configuration without it; one that comes back is forgotten.
func TestDeadVoter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const after = time.Minute
	voters := func(ids ...string) []store.RaftServer {
		var out []store.RaftServer
		for _, id := range ids {
			out = append(out, store.RaftServer{ID: id, Voter: true})
		}
		return out
	}
	alive := func(ids ...string) map[string]bool {
		m := map[string]bool{}
		for _, id := range ids {
			m[id] = true
		}
		return m
	}
	tests := []struct {
		name    string
		conf    []store.RaftServer
		alive   map[string]bool
		gone    map[string]time.Time
		want    string
		refused bool
	}{
		{"all alive", voters("a", "b", "c"), alive("a", "b", "c"), nil, "", false},
		{"gone, not long enough", voters("a", "b", "c"), alive("a", "b"), map[string]time.Time{"c": t0.Add(-after + time.Second)}, "", false},
		{"gone long enough, 2 of 2 alive remain", voters("a", "b", "c"), alive("a", "b"), map[string]time.Time{"c": t0.Add(-after)}, "c", false},
		{"first seen gone now", voters("a", "b", "c"), alive("a", "b"), nil, "", false},
		{"two gone of three: no majority would remain", voters("a", "b", "c"), alive("a"), map[string]time.Time{"b": t0.Add(-after), "c": t0.Add(-after)}, "b", true},
		{"two gone of five: one at a time", voters("a", "b", "c", "d", "e"), alive("a", "b", "c"), map[string]time.Time{"d": t0.Add(-after), "e": t0.Add(-after)}, "d", false},
		{"a nonvoter is not counted", append(voters("a", "b"), store.RaftServer{ID: "n"}), alive("a", "b"), map[string]time.Time{"n": t0.Add(-after)}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gone := map[string]time.Time{}
			for k, v := range tt.gone {
				gone[k] = v
			}
			id, why := deadVoter(tt.conf, tt.alive, gone, t0, after)
			if tt.refused {
				if why == "" || id != tt.want {
					t.Errorf("deadVoter = %q, %q; want %q refused", id, why, tt.want)
				}
				return
			}
			if id != tt.want || why != "" {
				t.Errorf("deadVoter = %q, %q; want %q", id, why, tt.want)
			}
		})
	}

	// One seen gone is noted, and forgotten when it comes back.
	gone := map[string]time.Time{}
	deadVoter(voters("a", "b", "c"), alive("a", "b"), gone, t0, after)
	if since, ok := gone["c"]; !ok || !since.Equal(t0) {
		t.Fatalf("c not noted as gone at t0: %v", gone)
	}
	deadVoter(voters("a", "b", "c"), alive("a", "b", "c"), gone, t0.Add(2*after), after)
	if len(gone) != 0 {
		t.Errorf("c came back but is still noted: %v", gone)
	}
}
