package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWasmImagesAreOneImagePerGroup(t *testing.T) {
	module := filepath.Join(t.TempDir(), "m.wasm")
	if err := os.WriteFile(module, []byte("\x00asm\x01\x00\x00\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	build, err := wasmBuilder(module)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{} // manifest digest -> group
	for _, im := range images {
		img, err := build(im)
		if err != nil {
			t.Fatalf("%s: %v", im.ref, err)
		}
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Layers) != 1 || m.Layers[0].MediaType != "application/wasm" {
			t.Errorf("%s: layers %v, want one application/wasm layer", im.ref, m.Layers)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if g, ok := ids[d.String()]; ok && g != groupOf(im) {
			t.Errorf("%s has the image of %s", im.ref, g)
		}
		ids[d.String()] = groupOf(im)
	}
	groups := map[string]bool{}
	for _, im := range images {
		groups[groupOf(im)] = true
	}
	if len(ids) != len(groups) {
		t.Errorf("%d images for %d groups", len(ids), len(groups))
	}
}

func TestWasmBuilderRefusesANonModule(t *testing.T) {
	p := filepath.Join(t.TempDir(), "not.wasm")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := wasmBuilder(p); err == nil || !strings.Contains(err.Error(), "not a Wasm module") {
		t.Errorf("error %v, want one saying it is not a Wasm module", err)
	}
}
