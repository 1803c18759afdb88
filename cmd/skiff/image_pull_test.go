package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"skiff.dev/skiff/runtime/image"
	"skiff.dev/skiff/runtime/image/imagetest"
)

// TestImagePull: skiff image pull fetches a Linux image from a registry on
// 127.0.0.1 into the node's store, printing a line per layer when its
// output is not a terminal; skiff image ls then lists it.
func TestImagePull(t *testing.T) {
	reg := imagetest.NewRegistry(t)
	ref := reg.Push("busybox:1", imagetest.BusyboxImage(t))
	dataDir := t.TempDir()

	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs([]string{"image", "pull", "--data-dir", dataDir, ref})
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("skiff image pull: %v\n%s%s", err, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "pulled "+ref) || !strings.Contains(out.String(), "linux") {
		t.Errorf("skiff image pull printed %q", out.String())
	}
	if lines := strings.Count(errOut.String(), "\n"); lines != 2 {
		t.Errorf("want a line per layer (2), got:\n%s", errOut.String())
	}
	root = newRoot()
	out.Reset()
	root.SetOut(&out)
	root.SetArgs([]string{"image", "ls", "--data-dir", dataDir})
	if err := root.ExecuteContext(context.Background()); err != nil || !strings.Contains(out.String(), ref) {
		t.Errorf("skiff image ls: %v\n%s", err, out.String())
	}
}

func TestPullProgressBar(t *testing.T) {
	var out bytes.Buffer
	now := time.Unix(0, 0)
	p := newPullProgress(&out, "app:v1", true, func() time.Time { now = now.Add(time.Second); return now })
	p.update(image.Progress{Layer: "sha256:aaaa", Done: 0, Total: 3_000_000})
	p.update(image.Progress{Layer: "sha256:bbbb", Done: 1_000_000, Total: 1_000_000})
	if got := p.line(); got != "app:v1 [======>                       ]  25% 1.0MB/4.0MB, 1/2 layers" {
		t.Errorf("bar at 25%% = %q", got)
	}
	p.update(image.Progress{Layer: "sha256:aaaa", Done: 3_000_000, Total: 3_000_000})
	p.finish(true)
	last := out.String()[strings.LastIndex(out.String(), "\r")+1:]
	if last != "app:v1 [==============================] 100% 4.0MB/4.0MB, 2/2 layers\n" {
		t.Errorf("last line drawn = %q", last)
	}
}
