//go:build !linux

package layer

import (
	"errors"
	"io"
	"os"
)

var errNotLinux = errors.New("unpacking layers needs Linux (openat2, overlayfs whiteouts)")

type writer struct{}

func openWriter(string, Options) (*writer, error)         { return nil, errNotLinux }
func (*writer) close()                                    {}
func (*writer) finish() error                             { return errNotLinux }
func (*writer) file(string, meta, io.Reader, int64) error { return errNotLinux }
func (*writer) dir(string, meta) error                    { return errNotLinux }
func (*writer) symlink(string, string, meta) error        { return errNotLinux }
func (*writer) link(string, string) error                 { return errNotLinux }
func (*writer) fifo(string, meta) error                   { return errNotLinux }
func (*writer) whiteout(string) error                     { return errNotLinux }
func (*writer) opaque(string) error                       { return errNotLinux }
func removeTree(dir string) error                         { return os.RemoveAll(dir) }
