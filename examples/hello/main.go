//go:build wasip1

// Command hello is the smallest skiff workload: a Go program built for
// WASI preview 1 that greets whoever its arguments and environment name.
//
//	GOOS=wasip1 GOARCH=wasm go build -o hello.wasm ./examples/hello
package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	who := os.Getenv("GREETING_TARGET")
	if len(os.Args) > 1 {
		who = strings.Join(os.Args[1:], " ")
	}
	if who == "" {
		who = "world"
	}
	fmt.Printf("Hello, %s! This is a WebAssembly module running in a skiff pod.\n", who)
}
