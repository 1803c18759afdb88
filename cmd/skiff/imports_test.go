package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
)

const module = "skiff.dev/skiff"

// rooms lists, for each room of ARCHITECTURE.md's package table, the rooms
// of skiff its packages (and their tests) may import. A room is a package
// path under the module; a package belongs to the longest room that
// prefixes it. Third-party imports are not checked here.
var rooms = map[string][]string{
	"control/api":         {"control/api"},
	"control/store":       {"control/store"},
	"control/cluster":     {"control/cluster", "control/store"},
	"control/apiserver":   {"control/apiserver", "control/api", "control/store", "control/cluster"},
	"control/scheduler":   {"control/scheduler", "control/api"},
	"control/controllers": {"control/controllers", "control/api"},
	"control/server":      {"control/server", "control/api", "control/store", "control/cluster", "control/apiserver", "control/scheduler", "control/controllers"},
	"node":                {"node", "cri", "runtime", "netns", "control/api", "control/cluster"},
	"node/agent":          {"node/agent", "control/api"},
	"node/proxy":          {"node/proxy", "control/api", "netns"}, // netns: tests only
	"cri":                 {"cri", "runtime", "netns"},
	"runtime":             {"runtime", "netns"}, // netns: tests only (implementations)
	"netns":               {"netns"},
	"examples":            {"examples", "control/api"},
	"cmd":                 {""}, // wiring: everything
}

// implementations are rooms whose packages a room may reach from its tests
// only: the CRI server speaks the runtime-neutral types (package runtime)
// and is handed its runtimes by the node assembly, while its tests
// assemble a real Wasm runtime to drive; the runtimes are handed a
// sandbox's network namespace by path, while runtime/oci's tests make one
// with netns to join.
var implementations = map[string][]string{
	"cri":        {"runtime/wasm", "runtime/oci"},
	"runtime":    {"netns"},
	"node/proxy": {"netns"}, // its tests program namespaces of their own; the node hands it one
}

type pkg struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

// roomOf returns the room a package path (relative to the module) is in.
func roomOf(rel string) (string, bool) {
	best := ""
	for r := range rooms {
		if (rel == r || strings.HasPrefix(rel, r+"/")) && len(r) > len(best) {
			best = r
		}
	}
	return best, best != ""
}

// violations returns every import that crosses a wall.
func violations(pkgs []pkg) []string {
	var out []string
	for _, p := range pkgs {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		room, ok := roomOf(rel)
		if !ok {
			out = append(out, fmt.Sprintf("%s is in no room of ARCHITECTURE.md", p.ImportPath))
			continue
		}
		imports := append(append(append([]string{}, p.Imports...), p.TestImports...), p.XTestImports...)
		for _, imp := range imports {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			irel := strings.TrimPrefix(imp, module+"/")
			allowed := false
			for _, a := range rooms[room] {
				if a == "" || irel == a || strings.HasPrefix(irel, a+"/") {
					allowed = true
				}
			}
			if !allowed {
				out = append(out, fmt.Sprintf("%s (room %s) imports %s", p.ImportPath, room, imp))
			}
		}
		for _, imp := range p.Imports {
			irel := strings.TrimPrefix(imp, module+"/")
			for _, impl := range implementations[room] {
				if strings.HasPrefix(imp, module+"/") && (irel == impl || strings.HasPrefix(irel, impl+"/")) {
					out = append(out, fmt.Sprintf("%s (room %s) imports %s outside its tests", p.ImportPath, room, imp))
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// TestImportBoundaries fails when a package imports a room that
// ARCHITECTURE.md's table does not allow it (only the apiserver reaches the
// store; cri and runtime know nothing of the control plane or the agent).
func TestImportBoundaries(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "list", "-e", "-json=ImportPath,Imports,TestImports,XTestImports", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 5 {
		t.Fatalf("go list found only %d packages; is the module root right (%s)?", len(pkgs), root)
	}
	for _, v := range violations(pkgs) {
		t.Error(v)
	}
}

// TestViolationsCatchesCrossings shows the check can fail.
func TestViolationsCatchesCrossings(t *testing.T) {
	tests := []struct {
		name string
		pkg  pkg
		want int
	}{
		{"scheduler reaches the store", pkg{ImportPath: module + "/control/scheduler", Imports: []string{module + "/control/store"}}, 1},
		{"cri reaches the agent", pkg{ImportPath: module + "/cri", TestImports: []string{module + "/node/agent"}}, 1},
		{"runtime reaches the api", pkg{ImportPath: module + "/runtime/wasm", XTestImports: []string{module + "/control/api/gen/skiff/v1"}}, 1},
		{"agent uses the api", pkg{ImportPath: module + "/node/agent", Imports: []string{module + "/control/api/gen/skiff/v1", "k8s.io/cri-api/pkg/apis/runtime/v1"}}, 0},
		{"apiserver uses the store", pkg{ImportPath: module + "/control/apiserver", Imports: []string{module + "/control/store"}}, 0},
		{"the node assembly reaches the store", pkg{ImportPath: module + "/node", Imports: []string{module + "/control/store"}}, 1},
		{"the agent reaches the node assembly", pkg{ImportPath: module + "/node/agent", Imports: []string{module + "/node"}}, 1},
		{"the server assembly uses the apiserver", pkg{ImportPath: module + "/control/server", Imports: []string{module + "/control/apiserver"}}, 0},
		{"the server assembly reaches the cri", pkg{ImportPath: module + "/control/server", Imports: []string{module + "/cri"}}, 1},
		{"a package in no room", pkg{ImportPath: module + "/util"}, 1},
		{"cri reaches a runtime implementation", pkg{ImportPath: module + "/cri", Imports: []string{module + "/runtime/wasm"}}, 1},
		{"a runtime makes network namespaces", pkg{ImportPath: module + "/runtime/oci", Imports: []string{module + "/netns"}}, 1},
		{"a runtime's tests make network namespaces", pkg{ImportPath: module + "/runtime/oci", TestImports: []string{module + "/netns"}}, 0},
		{"the proxy enters network namespaces itself", pkg{ImportPath: module + "/node/proxy", Imports: []string{module + "/netns"}}, 1},
		{"the proxy's tests make network namespaces", pkg{ImportPath: module + "/node/proxy", XTestImports: []string{module + "/netns"}}, 0},
		{"cri's tests assemble a runtime", pkg{ImportPath: module + "/cri", Imports: []string{module + "/runtime"}, TestImports: []string{module + "/runtime/wasm", module + "/runtime/wasm/wasmtest"}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := violations([]pkg{tt.pkg}); len(got) != tt.want {
				t.Errorf("violations = %q, want %d", got, tt.want)
			}
		})
	}
}
