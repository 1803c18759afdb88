// Command server is a WASI test program that answers HTTP/1.1 requests on
// the listening sockets its host pre-opens (SKIFF_LISTEN_FDS, "port:fd,...")
// until its stdin ends. Every response is "REPLY port\n" (REPLY is the
// first argument, "ok" by default), or N bytes of 'x' for GET /size/N.
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
)

func main() {
	reply := "ok"
	if len(os.Args) > 1 {
		reply = os.Args[1]
	}
	spec := os.Getenv("SKIFF_LISTEN_FDS")
	if spec == "" {
		fmt.Fprintln(os.Stderr, "SKIFF_LISTEN_FDS is not set: no ports declared")
		os.Exit(2)
	}
	for _, pf := range strings.Split(spec, ",") {
		port, fd, _ := strings.Cut(pf, ":")
		n, err := strconv.Atoi(fd)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bad SKIFF_LISTEN_FDS %q\n", spec)
			os.Exit(2)
		}
		ln, err := net.FileListener(os.NewFile(uintptr(n), "listener"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go serve(ln, reply+" "+port+"\n")
	}
	fmt.Println("serving", spec)
	io.Copy(io.Discard, os.Stdin)
	fmt.Println("terminating")
}

func serve(ln net.Listener, reply string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "accept:", err)
			return
		}
		go handle(c, reply)
	}
}

func handle(c net.Conn, reply string) {
	defer c.Close()
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return
	}
	for { // headers
		h, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if h == "\r\n" || h == "\n" {
			break
		}
	}
	body := []byte(reply)
	if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], "/size/") {
		n, _ := strconv.Atoi(strings.TrimPrefix(f[1], "/size/"))
		body = []byte(strings.Repeat("x", n))
	}
	fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", len(body))
	c.Write(body)
}
