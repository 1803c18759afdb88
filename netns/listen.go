package netns

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// listenBacklog is the backlog of the sockets ListenTCP opens.
const listenBacklog = 128

// ListenTCP opens a TCP socket listening on port of every IPv4 address of
// the network namespace pinned at path (the caller's when path is empty):
// non-blocking and close-on-exec. A socket stays in the namespace it was
// made in, whichever thread uses it later: this is how a Wasm container,
// which runs in the node process, listens in its pod's namespace.
func ListenTCP(path string, port int) (*os.File, error) {
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("listen on port %d: not a port number", port)
	}
	var f *os.File
	listen := func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("listen on port %d: socket: %w", port, err)
		}
		err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if err == nil {
			err = unix.Bind(fd, &unix.SockaddrInet4{Port: port})
		}
		if err == nil {
			err = unix.Listen(fd, listenBacklog)
		}
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("listen on port %d: %w", port, err)
		}
		f = os.NewFile(uintptr(fd), "tcp:"+strconv.Itoa(port))
		return nil
	}
	if path == "" {
		err := listen()
		return f, err
	}
	if err := Do(path, listen); err != nil {
		return nil, err
	}
	return f, nil
}
