// Command pause is the program of critest-mirror's pause stand-in: it
// waits until SIGINT or SIGTERM and exits 0. As pid 1 of a shared process
// namespace it reaps the children that others leave to it. It says on
// stderr when it handles the signals: a Go program that gets SIGTERM
// before its main has asked for it exits 2.
//
// Build it with CGO_ENABLED=0: the image holds /pause alone.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	os.Stderr.WriteString("pause: waiting for SIGINT or SIGTERM\n")
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
