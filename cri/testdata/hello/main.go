// Command hello is the Wasm program of the cri tests. It greets on stdout
// ("$GREETING from <argv[0]>!", GREETING defaulting to "Hello"), then runs
// its arguments as a script:
//
//	sleep DUR       time.Sleep(DUR)
//	stderr TEXT     print TEXT to stderr
//	exit N          os.Exit(N)
//	wait-stdin MSG  read stdin until end of file, then print MSG (stdin ends
//	                when the container is asked to stop)
package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

func main() {
	greeting := os.Getenv("GREETING")
	if greeting == "" {
		greeting = "Hello"
	}
	fmt.Printf("%s from %s!\n", greeting, os.Args[0])
	args := os.Args[1:]
	for i := 0; i+1 < len(args); i += 2 {
		switch cmd, arg := args[i], args[i+1]; cmd {
		case "sleep":
			d, err := time.ParseDuration(arg)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			time.Sleep(d)
		case "stderr":
			fmt.Fprintln(os.Stderr, arg)
		case "exit":
			n, _ := strconv.Atoi(arg)
			os.Exit(n)
		case "wait-stdin":
			io.Copy(io.Discard, os.Stdin)
			fmt.Println(arg)
		default:
			fmt.Fprintf(os.Stderr, "unknown command %q\n", cmd)
			os.Exit(2)
		}
	}
}
