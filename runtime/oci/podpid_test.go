package oci

import (
	"context"
	"strings"
	"testing"

	skiffrt "skiff.dev/skiff/runtime"
	"skiff.dev/skiff/runtime/pidns"
)

// TestJoinPIDNamespace: a container given a holder's PID namespace sees
// the holder as its PID 1, and is not it.
func TestJoinPIDNamespace(t *testing.T) {
	needRoot(t)
	r := newRuntime(t, t.TempDir())
	layer := busyboxLayer(t)
	h, err := pidns.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pidns.Stop(context.Background(), h) })
	out, errOut, st := runOut(t, r, skiffrt.ContainerSpec{Layers: []string{layer}, PIDNamespace: h.Path()}, "sh", "-c", "cat /proc/1/comm; echo $$")
	if out == "pause\n1\n" || !strings.HasPrefix(out, "pause\n") {
		t.Errorf("in the holder's namespace: pid 1 and own pid %q (stderr %q, %+v), want pause and not 1", out, errOut, st)
	}
}
