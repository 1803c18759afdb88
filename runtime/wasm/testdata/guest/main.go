// Command guest is a WASI test program. Its arguments are a small script:
//
//	echo TEXT     print TEXT to stdout
//	stderr TEXT   print TEXT to stderr
//	env KEY       print KEY=<value of $KEY>
//	argv0         print argv[0]
//	sleep DUR     time.Sleep(DUR)
//	exit N        os.Exit(N)
package main

import (
	"fmt"
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
		default:
			fmt.Fprintf(os.Stderr, "unknown command %q\n", cmd)
			os.Exit(2)
		}
	}
}
