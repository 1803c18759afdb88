//go:build wasip1

// Command graceful ticks until it is asked to stop, then says so and exits
// 0: a module that honours the grace period. skiff ends a container's stdin
// when it asks the container to stop, as SIGTERM would.
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
	for i := 0; ; i++ {
		select {
		case <-stop:
			fmt.Println("terminating")
			return
		case <-time.After(100 * time.Millisecond):
			fmt.Println("tick", i)
		}
	}
}
