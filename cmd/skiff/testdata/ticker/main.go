//go:build wasip1

// Command ticker prints a line every 100ms for a minute: a pod that keeps
// running while the end-to-end test does other things.
package main

import (
	"fmt"
	"time"
)

func main() {
	for i := 0; i < 600; i++ {
		fmt.Println("tick", i)
		time.Sleep(100 * time.Millisecond)
	}
}
