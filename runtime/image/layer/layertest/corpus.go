// Package layertest holds the corpus of hostile layers that package layer
// refuses, for its tests and for the tests of the image store that pulls
// such layers.
package layertest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"skiff.dev/skiff/runtime/image/layer"
)

// Entry is one tar entry of a test layer.
type Entry struct {
	H    tar.Header
	Body []byte
}

// MTime is the modification time of the entries the helpers make.
var MTime = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)

// Reg is a regular file.
func Reg(name, body string, mode int64) Entry {
	return Entry{H: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body)), ModTime: MTime}, Body: []byte(body)}
}

// Dir is a directory.
func Dir(name string, mode int64) Entry {
	return Entry{H: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: MTime}}
}

// Sym is a symlink.
func Sym(name, target string) Entry {
	return Entry{H: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, ModTime: MTime}}
}

// Hard is a hardlink.
func Hard(name, target string) Entry {
	return Entry{H: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, ModTime: MTime}}
}

// Dev is a device node.
func Dev(name string, typ byte, major, minor int64) Entry {
	return Entry{H: tar.Header{Typeflag: typ, Name: name, Mode: 0o666, Devmajor: major, Devminor: minor, ModTime: MTime}}
}

// Tar writes entries as an uncompressed tar.
func Tar(tb testing.TB, es ...Entry) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := e.H
		if err := tw.WriteHeader(&h); err != nil {
			tb.Fatalf("write header %q: %v", h.Name, err)
		}
		if _, err := tw.Write(e.Body); err != nil {
			tb.Fatalf("write %q: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// Case is one hostile layer.
type Case struct {
	Name string
	// Entries builds the layer for a base directory that holds sentinel/
	// (with passwd, etc/shadow and evil) next to the layer's directory;
	// the entries aim at the sentinel.
	Entries func(base string) []Entry
	Opts    layer.Options // the bounds under which the layer is refused
	Entry   string        // the entry the error must name (a suffix of it)
	Is      error         // what the error wraps
}

// Malicious returns the corpus: every layer Unpack must refuse, leaving
// nothing behind inside or outside its directory.
func Malicious() []Case {
	big := Reg("big", strings.Repeat("\x00", 2<<20), 0o644)
	many := []Entry{}
	for i := range 11 {
		many = append(many, Reg(fmt.Sprintf("f%d", i), "x", 0o644))
	}
	overlayXattr := Reg("redirect", "x", 0o644)
	overlayXattr.H.PAXRecords = map[string]string{"SCHILY.xattr.trusted.overlay.redirect": "/etc"}
	badUID := Reg("nobody", "x", 0o644)
	badUID.H.Uid = 1<<32 - 1
	weird := Reg("weird", "", 0o644)
	weird.H.Typeflag = 'Z'

	// Each case is built for a base directory holding sentinel/ and the
	// layer directory "layer"; entries aim at the sentinel.
	return []Case{
		{"dotdot escape", func(string) []Entry { return []Entry{Reg("../sentinel/evil", "x", 0o644)} }, layer.Options{}, "../sentinel/evil", layer.ErrRefused},
		{"dotdot inside a path", func(string) []Entry { return []Entry{Dir("a", 0o755), Reg("a/../../sentinel/evil", "x", 0o644)} }, layer.Options{}, "a/../../sentinel/evil", layer.ErrRefused},
		{"absolute path", func(base string) []Entry { return []Entry{Reg(base+"/sentinel/evil", "x", 0o644)} }, layer.Options{}, "/sentinel/evil", layer.ErrRefused},
		{"absolute root path", func(string) []Entry { return []Entry{Reg("/evil", "x", 0o644)} }, layer.Options{}, "/evil", layer.ErrRefused},
		{"write through an absolute symlink", func(base string) []Entry {
			return []Entry{Sym("link", base+"/sentinel"), Reg("link/passwd", "pwned", 0o644)}
		}, layer.Options{}, "link/passwd", layer.ErrRefused},
		{"write through a symlink inside the layer", func(string) []Entry {
			return []Entry{Dir("etc", 0o755), Sym("link", "etc"), Reg("link/passwd", "pwned", 0o644)}
		}, layer.Options{}, "link/passwd", layer.ErrRefused},
		{"relative symlink climbing out", func(string) []Entry {
			return []Entry{Sym("link", "../../.."), Reg("link/passwd", "pwned", 0o644)}
		}, layer.Options{}, "link", layer.ErrRefused},
		{"symlink chain", func(string) []Entry {
			// x/up -> .. is the root, esc -> x/up/.. is above it when followed.
			return []Entry{Dir("x", 0o755), Sym("x/up", ".."), Sym("esc", "x/up/.."), Reg("esc/sentinel/passwd", "pwned", 0o644)}
		}, layer.Options{}, "esc/sentinel/passwd", layer.ErrRefused},
		{"hardlink outside", func(string) []Entry { return []Entry{Hard("h", "../sentinel/passwd")} }, layer.Options{}, "h", layer.ErrRefused},
		{"hardlink to an absolute host path", func(base string) []Entry { return []Entry{Hard("h", base+"/sentinel/passwd")} }, layer.Options{}, "h", layer.ErrRefused},
		{"hardlink through a symlink", func(base string) []Entry {
			return []Entry{Sym("l", base+"/sentinel"), Hard("h", "l/passwd")}
		}, layer.Options{}, "h", layer.ErrRefused},
		{"hardlink not yet extracted", func(string) []Entry { return []Entry{Hard("h", "later"), Reg("later", "x", 0o644)} }, layer.Options{}, "h", layer.ErrRefused},
		{"char device", func(string) []Entry { return []Entry{Dev("dev/mem", tar.TypeChar, 1, 1)} }, layer.Options{}, "dev/mem", layer.ErrRefused},
		{"block device", func(string) []Entry { return []Entry{Dev("dev/sda", tar.TypeBlock, 8, 0)} }, layer.Options{}, "dev/sda", layer.ErrRefused},
		{"char device posing as a whiteout", func(string) []Entry { return []Entry{Dev("x", tar.TypeChar, 0, 0)} }, layer.Options{}, "x", layer.ErrRefused},
		{"whiteout climbing out", func(string) []Entry { return []Entry{Reg("../.wh.sentinel", "", 0o644)} }, layer.Options{}, "../.wh.sentinel", layer.ErrRefused},
		{"whiteout of ..", func(string) []Entry { return []Entry{Reg(".wh...", "", 0o644)} }, layer.Options{}, ".wh...", layer.ErrRefused},
		{"whiteout of .. in a directory", func(string) []Entry { return []Entry{Reg("a/.wh...", "", 0o644)} }, layer.Options{}, "a/.wh...", layer.ErrRefused},
		{"empty whiteout", func(string) []Entry { return []Entry{Reg(".wh.", "", 0o644)} }, layer.Options{}, ".wh.", layer.ErrRefused},
		{"aufs metadata", func(string) []Entry { return []Entry{Dir(".wh..wh.plnk", 0o700)} }, layer.Options{}, ".wh..wh.plnk", layer.ErrRefused},
		{"overlay xattr", func(string) []Entry { return []Entry{overlayXattr} }, layer.Options{}, "redirect", layer.ErrRefused},
		{"uid -1", func(string) []Entry { return []Entry{badUID} }, layer.Options{}, "nobody", layer.ErrRefused},
		{"unknown type", func(string) []Entry { return []Entry{weird} }, layer.Options{}, "weird", layer.ErrRefused},
		{"non-directory root", func(string) []Entry { return []Entry{Reg(".", "", 0o644)} }, layer.Options{}, ".", layer.ErrRefused},
		{"size bomb", func(string) []Entry { return []Entry{Reg("small", "x", 0o644), big} }, layer.Options{MaxBytes: 1 << 20}, "big", layer.ErrTooLarge},
		{"too many entries", func(string) []Entry { return many }, layer.Options{MaxEntries: 10}, "f10", layer.ErrTooLarge},
	}
}
