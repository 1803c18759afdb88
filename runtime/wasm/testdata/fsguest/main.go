// Command fsguest is a WASI test program that probes its preopens. Each
// argument pair or triple is one step; each step prints one line, "ok ..."
// or "error ...", and the next step runs either way:
//
//	read PATH           print the file's content
//	write PATH TEXT     create or truncate the file, write TEXT
//	symlink TARGET LINK make a symbolic link
package main

import (
	"fmt"
	"os"
)

func main() {
	args := os.Args[1:]
	for len(args) > 0 {
		switch args[0] {
		case "read":
			b, err := os.ReadFile(args[1])
			report("read "+args[1], string(b), err)
			args = args[2:]
		case "write":
			err := os.WriteFile(args[1], []byte(args[2]), 0o644)
			report("write "+args[1], "", err)
			args = args[3:]
		case "symlink":
			err := os.Symlink(args[1], args[2])
			report("symlink "+args[2], "", err)
			args = args[3:]
		default:
			fmt.Fprintf(os.Stderr, "unknown step %q\n", args[0])
			os.Exit(2)
		}
	}
}

func report(step, out string, err error) {
	if err != nil {
		fmt.Printf("%s: error\n", step)
		return
	}
	fmt.Printf("%s: ok %s\n", step, out)
}
