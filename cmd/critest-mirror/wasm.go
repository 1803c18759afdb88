package main

import (
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// wasmImage is the Wasm stand-in of group: the module with a custom
// section naming the group, so that groups have distinct image IDs.
func wasmImage(module []byte, group string) (v1.Image, error) {
	return artifact(withCustomSection(module, "critest-standin", group))
}

// artifact is module in the Wasm OCI artifact layout, as
// runtime/image/imagetest.WasmArtifact builds it.
func artifact(module []byte) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, "application/vnd.wasm.config.v0+json")
	return mutate.Append(img, mutate.Addendum{Layer: static.NewLayer(module, "application/wasm")})
}

// withCustomSection appends a Wasm custom section (id 0) called name
// holding payload: the module runs the same, its digest differs.
func withCustomSection(module []byte, name, payload string) []byte {
	var body []byte
	body = uleb(body, uint64(len(name)))
	body = append(body, name...)
	body = append(body, payload...)
	out := append([]byte{}, module...)
	out = append(out, 0)
	out = uleb(out, uint64(len(body)))
	return append(out, body...)
}

func uleb(b []byte, v uint64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}
