//go:build wasip1

// Command ticker is a long-running skiff workload: it prints a line with
// its VERSION every second until it is asked to stop (skiff ends a
// container's stdin, as SIGTERM would), then exits 0. It is what the
// deployment example rolls out.
//
//	GOOS=wasip1 GOARCH=wasm go build -o ticker.wasm ./examples/ticker
package main

import (
	"fmt"
	"io"
	"os"
	"time"
)

func main() {
	stop := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	version := os.Getenv("VERSION")
	for i := 0; ; i++ {
		select {
		case <-stop:
			fmt.Println("stopping")
			return
		case <-time.After(time.Second):
			fmt.Printf("version %s: tick %d\n", version, i)
		}
	}
}
