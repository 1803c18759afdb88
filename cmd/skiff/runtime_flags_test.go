package main

import (
	"strings"
	"testing"

	"skiff.dev/skiff/node"
)

// TestRuntimeFlags: the runtime host's limits are read from their flags,
// and a bad one is refused by name.
func TestRuntimeFlags(t *testing.T) {
	good := runtimeFlags{memoryLimit: "64Mi", moduleCache: "1Gi", logMaxSize: "1M", logMaxFiles: 3}
	got, err := good.limits()
	want := node.RuntimeLimits{DefaultMemoryLimit: 64 << 20, ModuleCacheBytes: 1 << 30, LogMaxSize: 1e6, LogMaxFiles: 3}
	if err != nil || got != want {
		t.Errorf("limits() = %+v, %v, want %+v", got, err, want)
	}
	if got, err := (&runtimeFlags{}).limits(); err != nil || got != (node.RuntimeLimits{}) {
		t.Errorf("unset flags: %+v, %v, want cri's defaults (zero)", got, err)
	}
	for _, tt := range []struct {
		name, want string
		edit       func(*runtimeFlags)
	}{
		{"memory not a quantity", "--wasm-memory-limit: invalid value \"lots\"", func(r *runtimeFlags) { r.memoryLimit = "lots" }},
		{"memory past 4Gi", "--wasm-memory-limit: invalid value \"8Gi\": must be from 64Ki to 4Gi", func(r *runtimeFlags) { r.memoryLimit = "8Gi" }},
		{"cache zero", "--wasm-module-cache: invalid value \"0\"", func(r *runtimeFlags) { r.moduleCache = "0" }},
		{"log size negative", "--container-log-max-size: invalid value \"-1\"", func(r *runtimeFlags) { r.logMaxSize = "-1" }},
		{"one log file", "--container-log-max-files: invalid value 1", func(r *runtimeFlags) { r.logMaxFiles = 1 }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := good
			tt.edit(&r)
			if _, err := r.limits(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("limits() = %v, want %q", err, tt.want)
			}
		})
	}
}
