package scheduler

import (
	"fmt"
	"maps"
	"testing"
	"time"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

func TestNodesToFind(t *testing.T) {
	for _, tt := range []struct{ nodes, want int }{
		{0, 0}, {1, 1}, {100, 100}, {101, 100}, {250, 120}, {1000, 420}, {5000, 500}, {10000, 500}, {100000, 5000},
	} {
		if got := nodesToFind(tt.nodes); got != tt.want {
			t.Errorf("nodesToFind(%d) = %d, want %d", tt.nodes, got, tt.want)
		}
	}
}

// TestPlaceRotates: in a large cluster place looks at a share of the
// nodes, each call after where the last stopped, so that pods placed one
// after the other without assuming them still spread; in a small one it
// looks at every node, so the best node wins wherever it starts.
func TestPlaceRotates(t *testing.T) {
	mk := func(n int) []*nodeInfo {
		nodes := make([]*skiffv1.Node, n)
		for i := range nodes {
			nodes[i] = node(fmt.Sprintf("n%04d", i))
		}
		return newSnapshot(nodes, nil)
	}
	pr := defaultProfile(func() time.Time { return now })
	pr.next = new(int)
	p := newPodInfo(pod("p", "", ""))
	big := mk(1000) // 420 looked at a call
	var got []string
	for range 3 {
		n, _ := pr.place(p, big)
		got = append(got, fmt.Sprintf("%s, next %d", n.name(), *pr.next))
	}
	// The third looks at n0840..n0999 and n0000..n0259: n0000 wins the tie.
	if want := []string{"n0000, next 420", "n0420, next 840", "n0000, next 260"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("placed on %q, want %q", got, want)
	}
	small := mk(50)
	small[30].requested.pods = -1 // fewer pods: wins ties
	for range 3 {
		if n, _ := pr.place(p, small); n.name() != "n0030" {
			t.Errorf("placed on %s, want n0030", n.name())
		}
	}
}

// TestReasonCounts: reasons are counted alike in the short list and past
// it, in the map.
func TestReasonCounts(t *testing.T) {
	var rc reasonCounts
	want := map[string]int{}
	for i := range 30 {
		r := fmt.Sprintf("reason %d", i%(maxListedReasons+3))
		rc.add(r)
		want[r]++
	}
	if got := rc.all(); !maps.Equal(got, want) {
		t.Errorf("counted %v, want %v", got, want)
	}
	rc.reset()
	if got := rc.all(); len(got) != 0 {
		t.Errorf("after reset %v, want none", got)
	}
}
