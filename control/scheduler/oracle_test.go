package scheduler

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// TestSpreadAndAntiAffinityOracle checks the topology spread and pod
// anti-affinity filters, which count through the snapshot's index of
// groups and domain tables, against a naive model that looks at every
// pod, on random clusters.
func TestSpreadAndAntiAffinityOracle(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	apps := []string{"web", "db", "cache"}
	// anySel is a selector of one of the shapes that find groups
	// differently: matchLabels, In with one value (both by label), In
	// with two, Exists and NotIn (every group).
	anySel := func() *skiffv1.LabelSelector {
		app := apps[r.IntN(3)]
		switch r.IntN(5) {
		case 0:
			return sel("app", app)
		case 1:
			return &skiffv1.LabelSelector{MatchExpressions: []*skiffv1.LabelSelectorRequirement{{Key: "app", Operator: "In", Values: []string{app}}}}
		case 2:
			return &skiffv1.LabelSelector{MatchExpressions: []*skiffv1.LabelSelectorRequirement{{Key: "app", Operator: "In", Values: []string{app, apps[r.IntN(3)]}}}}
		case 3:
			return &skiffv1.LabelSelector{MatchExpressions: []*skiffv1.LabelSelectorRequirement{{Key: "tier", Operator: "Exists"}}}
		}
		return &skiffv1.LabelSelector{MatchExpressions: []*skiffv1.LabelSelectorRequirement{{Key: "app", Operator: "NotIn", Values: []string{app}}}}
	}
	for round := range 500 {
		var nodes []*skiffv1.Node
		for i := range 2 + r.IntN(8) {
			var kv []string
			if r.IntN(4) > 0 {
				kv = append(kv, "zone", fmt.Sprintf("z%d", r.IntN(3)))
			}
			if r.IntN(3) == 0 {
				kv = append(kv, hostnameLabel, fmt.Sprintf("h%d", r.IntN(3)))
			}
			if r.IntN(2) == 0 {
				kv = append(kv, "disk", "ssd")
			}
			nodes = append(nodes, node(fmt.Sprintf("n%d", i), labelled(kv...)))
		}
		keys := []string{"zone", hostnameLabel}
		var bound []*skiffv1.Pod
		for i := range r.IntN(20) {
			var set func(*skiffv1.PodSpec)
			if r.IntN(4) == 0 {
				set = antiAff(keys[r.IntN(2)], anySel())
			}
			kv := []string{"app", apps[r.IntN(3)]}
			if r.IntN(2) == 0 {
				kv = append(kv, "tier", "front")
			}
			p := on(nodes[r.IntN(len(nodes))].Metadata.Name, podWith(fmt.Sprintf("x%d", i), set, kv...))
			if r.IntN(5) == 0 {
				p.Metadata.Namespace = "other"
			}
			if r.IntN(8) == 0 {
				p.Status.Phase = "Succeeded"
			}
			bound = append(bound, p)
		}
		pending := podWith("p", nil, "app", apps[r.IntN(3)])
		if r.IntN(2) == 0 {
			pending.Spec.NodeSelector = map[string]string{"disk": "ssd"}
		}
		for range r.IntN(3) {
			spread(int32(1+r.IntN(2)), keys[r.IntN(2)], "DoNotSchedule", anySel())(pending.Spec)
		}
		if r.IntN(2) == 0 {
			antiAff(keys[r.IntN(2)], anySel())(pending.Spec)
		}
		snap := newSnapshot(nodes, bound)
		for _, f := range []filter{podTopologySpread{}, interPodAntiAffinity{}} {
			got := filterEach(f, pending, snap)
			want := naiveFilter(f, pending, snap, bound)
			if !maps.Equal(got, want) {
				t.Fatalf("round %d, %s:\n got %q\nwant %q\nnodes %v\nbound %v\npod %v", round, f.Name(), got, want, nodes, bound, pending)
			}
		}
	}
}

// naiveFilter is what kube-scheduler's PodTopologySpread or
// InterPodAffinity filter says of each node, worked out from every pod.
func naiveFilter(f filter, p *skiffv1.Pod, snap []*nodeInfo, bound []*skiffv1.Pod) map[string]string {
	byName := map[string]*nodeInfo{}
	for _, n := range snap {
		byName[n.name()] = n
	}
	var live []*skiffv1.Pod
	for _, b := range bound {
		if !finished(b) {
			live = append(live, b)
		}
	}
	pi := newPodInfo(p)
	out := map[string]string{}
	switch f.(type) {
	case podTopologySpread:
		cs := spreadConstraints(pi, "DoNotSchedule")
		hasAll := func(n *nodeInfo) bool {
			for _, c := range cs {
				if _, ok := topologyValue(n, c.key); !ok {
					return false
				}
			}
			return true
		}
		counts := make([]map[string]int64, len(cs))
		mins := make([]int64, len(cs))
		for i, c := range cs {
			counts[i] = map[string]int64{}
			for _, n := range snap {
				if hasAll(n) && requiredNodeMatch(pi, n) {
					v, _ := topologyValue(n, c.key)
					counts[i][v] += 0
				}
			}
			for _, b := range live {
				n := byName[b.Spec.NodeName]
				if b.Metadata.Namespace != p.Metadata.Namespace || !hasAll(n) || !requiredNodeMatch(pi, n) || !c.sel.matches(b.Metadata.Labels) {
					continue
				}
				v, _ := topologyValue(n, c.key)
				counts[i][v]++
			}
			mins[i] = -1
			for _, k := range counts[i] {
				if mins[i] < 0 || k < mins[i] {
					mins[i] = k
				}
			}
			mins[i] = max(mins[i], 0)
		}
		for _, n := range snap {
			out[n.name()] = ""
			for i, c := range cs {
				v, ok := topologyValue(n, c.key)
				if !ok {
					out[n.name()] = errSpreadLabel
					break
				}
				if counts[i][v]+int64(c.self)-mins[i] > c.maxSkew {
					out[n.name()] = errSpread
					break
				}
			}
		}
	case interPodAntiAffinity:
		required, _ := antiAffinityTerms(p.Spec.GetAffinity().GetPodAntiAffinity(), p.Metadata.Namespace)
		type pair struct{ key, value string }
		own, existing := map[pair]bool{}, map[pair]bool{}
		for _, b := range live {
			bn := byName[b.Spec.NodeName]
			for _, t := range required {
				if v, ok := topologyValue(bn, t.key); ok && t.picks(b.Metadata.Namespace, b.Metadata.Labels) {
					own[pair{t.key, v}] = true
				}
			}
			theirs, _ := antiAffinityTerms(b.Spec.GetAffinity().GetPodAntiAffinity(), b.Metadata.Namespace)
			for _, t := range theirs {
				if v, ok := topologyValue(bn, t.key); ok && t.picks(p.Metadata.Namespace, p.Metadata.Labels) {
					existing[pair{t.key, v}] = true
				}
			}
		}
		for _, n := range snap {
			out[n.name()] = ""
			for _, key := range []string{"zone", hostnameLabel} {
				v, ok := topologyValue(n, key)
				if ok && own[pair{key, v}] {
					out[n.name()] = errAntiAffinity
				}
			}
			if out[n.name()] != "" {
				continue
			}
			for _, key := range []string{"zone", hostnameLabel} {
				v, ok := topologyValue(n, key)
				if ok && existing[pair{key, v}] {
					out[n.name()] = errExistingAntiAffinity
				}
			}
		}
	}
	return out
}
