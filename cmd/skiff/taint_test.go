package main

import (
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

func TestTaintArgs(t *testing.T) {
	gpu := &skiffv1.Taint{Key: "dedicated", Value: "gpu", Effect: "NoSchedule"}
	spot := &skiffv1.Taint{Key: "spot", Effect: "PreferNoSchedule"}
	gone := &skiffv1.Taint{Key: "dedicated", Effect: "NoExecute"}
	tests := []struct {
		name      string
		args      []string
		have      []*skiffv1.Taint
		overwrite bool
		want      string // the taints after, or the error
	}{
		{"add", []string{"dedicated=gpu:NoSchedule", "spot:PreferNoSchedule"}, nil, false, "dedicated=gpu:NoSchedule spot:PreferNoSchedule"},
		{"remove by key and effect", []string{"dedicated:NoSchedule-"}, []*skiffv1.Taint{gpu, gone, spot}, false, "dedicated:NoExecute spot:PreferNoSchedule"},
		{"remove by key", []string{"dedicated-"}, []*skiffv1.Taint{gpu, gone, spot}, false, "spot:PreferNoSchedule"},
		{"remove missing", []string{"other:NoSchedule-"}, []*skiffv1.Taint{gpu}, false, `error: taint "other:NoSchedule" not found on node n`},
		{"same key and effect", []string{"dedicated=tpu:NoSchedule"}, []*skiffv1.Taint{gpu}, false,
			"error: node n already has a dedicated taint with effect NoSchedule, and --overwrite is false"},
		{"overwrite", []string{"dedicated=tpu:NoSchedule"}, []*skiffv1.Taint{gpu, spot}, true, "dedicated=tpu:NoSchedule spot:PreferNoSchedule"},
		{"same key, other effect", []string{"dedicated:NoExecute"}, []*skiffv1.Taint{gpu}, false, "dedicated=gpu:NoSchedule dedicated:NoExecute"},
		{"no effect", []string{"dedicated=gpu"}, nil, false, `error: invalid taint "dedicated=gpu": want KEY[=VALUE]:EFFECT to add or KEY[:EFFECT]- to remove`},
		{"bad effect", []string{"k:NoRun"}, nil, false, `error: invalid taint "k:NoRun": unsupported effect "NoRun": supported are NoSchedule, PreferNoSchedule, NoExecute`},
		{"no key", []string{"=v:NoSchedule"}, nil, false, `error: invalid taint "=v:NoSchedule": the key is empty`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := fmt.Sprint(tt.have)
			ch, err := parseTaintArgs(tt.args)
			var got []*skiffv1.Taint
			if err == nil {
				got, err = ch.apply("n", tt.have, tt.overwrite)
			}
			var s string
			if err != nil {
				s = "error: " + err.Error()
			} else {
				var parts []string
				for _, t := range got {
					parts = append(parts, taintString(t))
				}
				s = strings.Join(parts, " ")
			}
			if s != tt.want {
				t.Errorf("taint %q:\n got %s\nwant %s", tt.args, s, tt.want)
			}
			if after := fmt.Sprint(tt.have); after != before {
				t.Errorf("the node's own list changed: %s, was %s", after, before)
			}
		})
	}
}

func TestLabelArgs(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		have      map[string]string
		overwrite bool
		want      string // the labels after, "unchanged" or the error
	}{
		{"set and remove", []string{"disk=ssd", "old-"}, map[string]string{"old": "x", "zone": "z1"}, false, "map[disk:ssd zone:z1]"},
		{"same value", []string{"zone=z1"}, map[string]string{"zone": "z1"}, false, "unchanged"},
		{"other value", []string{"zone=z2"}, map[string]string{"zone": "z1"}, false, `error: "zone" already has a value (z1), and --overwrite is false`},
		{"overwrite", []string{"zone=z2"}, map[string]string{"zone": "z1"}, true, "map[zone:z2]"},
		{"empty value", []string{"flag="}, map[string]string{}, false, "map[flag:]"},
		{"bad", []string{"zone"}, nil, false, `error: invalid label "zone": want KEY=VALUE to set or KEY- to remove`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch, err := parseLabelArgs(tt.args)
			labels := maps.Clone(tt.have)
			if err == nil {
				err = ch.apply(labels, tt.overwrite)
			}
			got := fmt.Sprint(labels)
			switch {
			case err == errUnchanged:
				got = "unchanged"
			case err != nil:
				got = "error: " + err.Error()
			}
			if got != tt.want {
				t.Errorf("label %q: got %s, want %s", tt.args, got, tt.want)
			}
		})
	}
}

// TestDevNodePlacement: label, taint and cordon a node from the CLI and
// see the scheduler follow: a pod that asks for a label the node lacks,
// or that does not tolerate its taint, waits and says why in describe; it
// is placed once the node is labelled and the taint removed. It also asks
// for kubernetes.io/os=linux, which the node has from its registration,
// as a kubelet's.
func TestDevNodePlacement(t *testing.T) {
	c := startDev(t)
	if out := c.mustSkiff("taint", "node", "node-1", "dedicated=gpu:NoSchedule"); out != "node/node-1 tainted\n" {
		t.Errorf("taint: %q", out)
	}
	if out := c.mustSkiff("cordon", "node-1"); out != "node/node-1 cordoned\n" {
		t.Errorf("cordon: %q", out)
	}
	desc := c.mustSkiff("describe", "node", "node-1")
	if !strings.Contains(desc, "Taints:") || !strings.Contains(desc, "dedicated=gpu:NoSchedule") || !strings.Contains(desc, "Unschedulable:") {
		t.Errorf("describe node shows no taint or unschedulable:\n%s", desc)
	}
	if out := c.mustSkiff("get", "nodes"); !strings.Contains(out, "Ready,SchedulingDisabled") {
		t.Errorf("get nodes after cordon:\n%s", out)
	}
	c.mustSkiff("apply", "-f", writeFile(t, "p.yaml", podManifest("gpu", "hello", "nodeSelector: {accel: gpu, kubernetes.io/os: linux}")))
	wantWhy := func(why string) {
		t.Helper()
		var desc string
		eventually(t, 20*time.Second, func() bool {
			desc = c.mustSkiff("describe", "pod", "gpu")
			return strings.Contains(desc, "FailedScheduling") && strings.Contains(desc, why)
		}, func() string { return fmt.Sprintf("describe pod gpu does not say %q:\n%s", why, desc) })
		if p := c.pod("gpu"); p.Spec.NodeName != "" {
			t.Fatalf("pod bound to %q while it should wait", p.Spec.NodeName)
		}
	}
	wantWhy("0/1 nodes are available: 1 node(s) were unschedulable.")
	if out := c.mustSkiff("uncordon", "node-1"); out != "node/node-1 uncordoned\n" {
		t.Errorf("uncordon: %q", out)
	}
	wantWhy("0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}.")
	c.mustSkiff("taint", "node", "node-1", "dedicated:NoSchedule-")
	wantWhy("0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.")
	if out := c.mustSkiff("label", "node", "node-1", "accel=gpu"); out != "node/node-1 labeled\n" {
		t.Errorf("label: %q", out)
	}
	eventually(t, 20*time.Second, func() bool { return c.pod("gpu").Spec.NodeName == "node-1" },
		func() string { return "pod gpu not bound to node-1 once the node is labelled and untainted" })
	if _, err := c.skiff("taint", "node", "node-1", "dedicated:NoSchedule-"); err == nil || !strings.Contains(err.Error(), `taint "dedicated:NoSchedule" not found`) {
		t.Errorf("removing a taint the node lacks: %v", err)
	}
}

// TestDescribeNodeTaints: describe lists a node's taints one a line, as
// kubectl does.
func TestDescribeNodeTaints(t *testing.T) {
	n := &skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: "n1"}, Spec: &skiffv1.NodeSpec{Unschedulable: true, Taints: []*skiffv1.Taint{
		{Key: "dedicated", Value: "gpu", Effect: "NoSchedule"}, {Key: "gone", Effect: "NoExecute"},
	}}}
	var b strings.Builder
	if err := describe(&b, kinds.Node, n, nil, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	want := "Unschedulable: true\nTaints:        dedicated=gpu:NoSchedule\n               gone:NoExecute\n"
	if !strings.Contains(b.String(), want) {
		t.Errorf("describe node:\n%s\nwant it to hold:\n%s", b.String(), want)
	}
}
