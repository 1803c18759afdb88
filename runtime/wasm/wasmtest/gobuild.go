package wasmtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// BuildGo compiles the Go main package in dir for GOOS=wasip1 GOARCH=wasm,
// with the go command of the toolchain running the test, and writes the
// module to out.
func BuildGo(dir, out string) error {
	goCmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.Command(goCmd, "build", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s for wasip1: %w\n%s", dir, err, b)
	}
	return nil
}
