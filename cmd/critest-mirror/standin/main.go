// Command standin is the Wasm stand-in that critest-mirror serves under
// every image name critest pulls (build it with GOOS=wasip1 GOARCH=wasm).
// It is a very small busybox: argv[0] (its base name) picks the applet,
// because critest gives containers commands such as ["echo", "-n",
// "hello"], ["sleep", "4321"] or ["sh", "-c", "top"].
//
//	echo [-n] ARGS...   print ARGS
//	sleep SECONDS       sleep, or stop earlier at the end of stdin
//	top, pause, sh      idle until stdin ends (skiff's request to stop)
//	sh -c SCRIPT        run SCRIPT: commands split on ';', "A || B",
//	                    and "while true; do BODY; done"
//	cat FILE...         print files
//	ls [-A] DIR         list DIR
//	true, false         exit 0, exit 1
//	pgrep               exit 1 (a Wasm instance sees no processes)
//
// Any other argv[0] (a container without a command gets its name) prints
// one line and idles until stdin ends, like a server; any other command in
// a script is "not found" (exit 127).
package main

import (
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// stop is closed when stdin ends: skiff asks a module to stop that way.
var stop = make(chan struct{})

func main() {
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	if len(os.Args) < 1 || !applet(os.Args[0]) {
		// A container without a command: argv[0] is its name.
		fmt.Printf("stand-in %s: running until stdin ends\n", strings.Join(os.Args, " "))
		os.Exit(idle())
	}
	os.Exit(run(os.Args))
}

var applets = []string{"echo", "sleep", "sh", "cat", "ls", "true", "false", "pgrep", "top", "pause"}

func applet(argv0 string) bool {
	for _, a := range applets {
		if path.Base(argv0) == a {
			return true
		}
	}
	return false
}

func run(argv []string) int {
	args := argv[1:]
	switch path.Base(argv[0]) {
	case "echo":
		nl := "\n"
		if len(args) > 0 && args[0] == "-n" {
			nl, args = "", args[1:]
		}
		fmt.Print(strings.Join(args, " ") + nl)
		return 0
	case "sleep":
		if len(args) != 1 {
			fmt.Fprintln(os.Stderr, "sleep: want one argument, seconds")
			return 2
		}
		s, err := strconv.ParseFloat(args[0], 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sleep: invalid number %q\n", args[0])
			return 2
		}
		select {
		case <-time.After(time.Duration(s * float64(time.Second))):
			return 0
		case <-stop:
			return 0
		}
	case "sh":
		if len(args) >= 2 && args[0] == "-c" {
			return script(args[1])
		}
		return idle()
	case "cat":
		code := 0
		for _, f := range args {
			b, err := os.ReadFile(f)
			if err != nil {
				fmt.Fprintf(os.Stderr, "cat: %v\n", err)
				code = 1
				continue
			}
			os.Stdout.Write(b)
		}
		return code
	case "ls":
		if len(args) > 0 && args[0] == "-A" {
			args = args[1:]
		}
		dir := "."
		if len(args) > 0 {
			dir = args[0]
		}
		es, err := os.ReadDir(dir)
		if err != nil {
			fmt.Fprintf(os.Stderr, "ls: %v\n", err)
			return 1
		}
		names := make([]string, 0, len(es))
		for _, e := range es {
			names = append(names, e.Name())
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Println(n)
		}
		return 0
	case "true":
		return 0
	case "false", "pgrep":
		return 1
	case "top", "pause":
		return idle()
	default:
		fmt.Fprintf(os.Stderr, "sh: %s: not found (the Wasm stand-in has no such applet)\n", argv[0])
		return 127
	}
}

func idle() int {
	<-stop
	return 0
}

// script runs the few shell forms critest uses.
func script(s string) int {
	s = strings.TrimSpace(s)
	if body, ok := strings.CutPrefix(s, "while true; do "); ok {
		body, _ = strings.CutSuffix(body, "; done")
		for {
			script(body)
			select {
			case <-stop:
				return 0
			default:
			}
		}
	}
	code := 0
	for _, cmd := range strings.Split(s, ";") {
		code = 1
		for _, alt := range strings.Split(cmd, "||") {
			f := fields(alt)
			if len(f) == 0 {
				code = 0
				continue
			}
			if code = run(f); code == 0 {
				break
			}
		}
	}
	return code
}

// fields splits a simple command, dropping quotes.
func fields(s string) []string {
	f := strings.Fields(s)
	for i := range f {
		f[i] = strings.Trim(f[i], `'"`)
	}
	return f
}
