// Command guest is a WASI test program. Its arguments are a small script:
//
//	echo TEXT     print TEXT to stdout
//	stderr TEXT   print TEXT to stderr
//	env KEY       print KEY=<value of $KEY>
//	argv0         print argv[0]
//	sleep DUR     time.Sleep(DUR)
//	exit N        os.Exit(N)
//	wait-stdin    read stdin until end of file, then print "terminating"
//	graceful DUR  print "tick" every DUR while a goroutine reads stdin; at
//	              its end of file print "terminating"
package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

func main() {
	args := os.Args[1:]
	for i := 0; i < len(args); i++ {
		next := func() string {
			i++
			if i >= len(args) {
				fmt.Fprintf(os.Stderr, "%s needs an argument\n", args[i-1])
				os.Exit(2)
			}
			return args[i]
		}
		switch cmd := args[i]; cmd {
		case "echo":
			fmt.Println(next())
		case "stderr":
			fmt.Fprintln(os.Stderr, next())
		case "env":
			k := next()
			fmt.Printf("%s=%s\n", k, os.Getenv(k))
		case "argv0":
			fmt.Println(os.Args[0])
		case "sleep":
			d, err := time.ParseDuration(next())
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			time.Sleep(d)
		case "exit":
			n, _ := strconv.Atoi(next())
			os.Exit(n)
		case "wait-stdin":
			io.Copy(io.Discard, os.Stdin)
			fmt.Println("terminating")
		case "graceful":
			d, err := time.ParseDuration(next())
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			graceful(d)
		default:
			fmt.Fprintf(os.Stderr, "unknown command %q\n", cmd)
			os.Exit(2)
		}
	}
}

// graceful ticks on the main goroutine until stdin, read on another one,
// reaches end of file: the shape of a server that stops when asked.
func graceful(every time.Duration) {
	eof := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(eof)
	}()
	for {
		select {
		case <-eof:
			fmt.Println("terminating")
			return
		case <-time.After(every):
			fmt.Println("tick")
		}
	}
}
