// Package layer unpacks OCI image layers (tar streams, plain, gzip or zstd)
// into a directory, one directory per layer, in the form overlayfs reads as
// a layer: whiteouts are kept as overlayfs whiteouts, not applied. It
// assumes the layer is hostile: every entry is checked and written relative
// to the layer directory without following symlinks, and sizes are bounded.
//
// It does not pull, verify digests, stack layers or mount anything: the
// image store hands it a verified blob and the snapshotter decides where
// the directory goes.
package layer

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Defaults of Options.
const (
	DefaultMaxBytes   = 8 << 30
	DefaultMaxEntries = 1_000_000
)

// Errors Unpack wraps, for errors.Is.
var (
	// ErrRefused: an entry is unsafe or unsupported (escapes the layer,
	// device node, unknown type, ...). The layer is hostile or broken.
	ErrRefused = errors.New("refused")
	// ErrTooLarge: the layer exceeds Options.MaxBytes or MaxEntries.
	ErrTooLarge = errors.New("layer too large")
)

// Options bound and tune Unpack. The zero value is safe.
type Options struct {
	// MaxBytes bounds the total size of the layer's regular files (0:
	// DefaultMaxBytes). The decompressed stream as a whole is bounded by
	// MaxBytes plus 2 KiB per allowed entry plus 1 MiB (headers, padding),
	// so a decompression bomb stops there whatever its entries are.
	MaxBytes int64
	// MaxEntries bounds the number of tar entries (0: DefaultMaxEntries).
	MaxEntries int
	// KeepSetID keeps setuid and setgid bits on files and applies
	// security.capability xattrs. Off by default: a layer cannot grant
	// privilege on exec unless the caller trusts the image.
	KeepSetID bool
}

func (o Options) withDefaults() Options {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	return o
}

// streamLimit bounds the decompressed tar stream.
func (o Options) streamLimit() int64 {
	return o.MaxBytes + int64(o.MaxEntries)*2048 + 1<<20
}

// Stats says what Unpack did.
type Stats struct {
	Entries   int   // tar entries read (global PAX headers included)
	Bytes     int64 // bytes of regular-file content written
	Whiteouts int   // .wh.NAME entries turned into overlayfs whiteouts
	Opaques   int   // .wh..wh..opq entries (directories marked opaque)
	// DroppedXattrs counts xattrs not applied: anything but user.*, and
	// security.capability unless KeepSetID (user.overlay.* and
	// trusted.overlay.* are refused, not dropped).
	DroppedXattrs int
}

// EntryError is the error of one tar entry.
type EntryError struct {
	Entry string // the entry's name as the tar has it
	Err   error
}

func (e *EntryError) Error() string { return fmt.Sprintf("entry %q: %v", e.Entry, e.Err) }
func (e *EntryError) Unwrap() error { return e.Err }

func refused(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrRefused)
}

// Unpack extracts the layer tar stream r (plain, gzip or zstd, detected by
// its magic) into dir, which must not exist yet: it is created (its parent
// must exist), and on any error it is removed, so nothing is left behind.
// r is read to its end (bounded), so a hashing reader sees every byte.
//
// The result is one overlayfs layer directory, as containerd's
// archive.Apply writes it for the overlayfs snapshotter:
//   - Names are relative: "./x" and "x/" are accepted; an absolute name or
//     any ".." component is refused (tar writers never emit them).
//   - Regular files, directories, symlinks, hardlinks and FIFOs are
//     created; an entry replaces what an earlier entry put at its path
//     (directories merge). Missing parents are created 0755.
//   - Mode bits are applied (sticky kept; setuid/setgid dropped from files
//     unless KeepSetID; setgid kept on directories: it only steers group
//     inheritance); ownership is applied when running as root (lchown for
//     symlinks); mtimes are applied, directories' last.
//   - xattrs: user.* only (and security.capability with KeepSetID), on
//     files and directories; user.overlay.* and trusted.overlay.* are
//     refused: a layer must not steer overlayfs.
//   - ".wh.NAME" becomes a 0/0 character device NAME (an overlayfs
//     whiteout; skipped if this layer already has NAME: a whiteout hides
//     lower layers only), ".wh..wh..opq" sets trusted.overlay.opaque=y on
//     its directory. Whiteouts need Linux 5.8+ or CAP_MKNOD; the opaque
//     xattr needs CAP_SYS_ADMIN (root): without them Unpack fails with an
//     error wrapping errors.ErrUnsupported. Other ".wh..wh." names (AUFS
//     metadata) are refused.
//   - Refused (ErrRefused): paths that would climb out; a path whose
//     parent goes through a symlink (tar writers never emit one; even an
//     in-layer symlink is refused, so no write can be redirected); a
//     relative symlink target that climbs above the layer root (absolute
//     targets are kept: they resolve inside the container's root); a
//     hardlink to an absolute path, outside the layer, through a symlink,
//     or to anything but a file, symlink or FIFO already extracted;
//     character and block devices; unknown entry types; uid or gid out of
//     range.
//   - Bounded (ErrTooLarge): MaxBytes of file content, MaxEntries entries.
//
// Errors name the entry (EntryError). Context cancellation stops Unpack
// between reads; a read blocked in r stops only if r honours ctx. Unpack
// does not fsync: the caller syncs before recording the layer as done.
func Unpack(ctx context.Context, r io.Reader, dir string, opts Options) (Stats, error) {
	if dir == "" {
		return Stats{}, errors.New("unpack layer: no directory given")
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return Stats{}, fmt.Errorf("unpack layer: %w", err)
	}
	st, err := unpack(ctx, r, dir, opts.withDefaults())
	if err != nil {
		if rerr := removeTree(dir); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove partial layer: %w", rerr))
		}
		return Stats{}, fmt.Errorf("unpack layer into %s: %w", dir, err)
	}
	return st, nil
}

func unpack(ctx context.Context, r io.Reader, dir string, opts Options) (Stats, error) {
	var st Stats
	dr, err := decompress(bufio.NewReaderSize(r, 64<<10))
	if err != nil {
		return st, fmt.Errorf("decompress layer: %w", err)
	}
	defer dr.Close()
	br := &boundedReader{ctx: ctx, r: dr, left: opts.streamLimit(), limit: opts.streamLimit()}
	tr := tar.NewReader(br)
	w, err := openWriter(dir, opts)
	if err != nil {
		return st, err
	}
	defer w.close()
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return st, fmt.Errorf("read layer after %d entries: %w", st.Entries, err)
		}
		st.Entries++
		if st.Entries > opts.MaxEntries {
			return st, &EntryError{h.Name, fmt.Errorf("more than %d entries: %w", opts.MaxEntries, ErrTooLarge)}
		}
		if err := entry(w, h, tr, opts, &st); err != nil {
			return st, &EntryError{h.Name, err}
		}
	}
	if err := w.finish(); err != nil {
		return st, err
	}
	// Read the rest (tar padding, compression trailer) so checksums are
	// verified and a hashing r sees every byte.
	if _, err := io.Copy(io.Discard, br); err != nil {
		return st, fmt.Errorf("read layer trailer: %w", err)
	}
	return st, nil
}

// entry checks one tar entry and writes it through w.
func entry(w *writer, h *tar.Header, r io.Reader, opts Options, st *Stats) error {
	if h.Typeflag == tar.TypeXGlobalHeader {
		return nil // metadata for the tar reader only
	}
	name, err := cleanName(h.Name)
	if err != nil {
		return err
	}
	if h.Uid < 0 || h.Uid > 1<<32-2 || h.Gid < 0 || h.Gid > 1<<32-2 {
		return refused("uid %d or gid %d out of range", h.Uid, h.Gid)
	}
	base := path.Base(name)
	if strings.HasPrefix(base, whiteoutPrefix) {
		return whiteout(w, name, st)
	}
	if name == "." && h.Typeflag != tar.TypeDir {
		return refused("the layer root must be a directory, not type %q", h.Typeflag)
	}
	m := meta{uid: h.Uid, gid: h.Gid, mtime: h.ModTime, atime: h.AccessTime}
	if m.atime.IsZero() {
		m.atime = m.mtime
	}
	m.mode = uint32(h.Mode) & 0o7777
	if h.Typeflag != tar.TypeDir && !opts.KeepSetID {
		m.mode &^= 0o6000
	}
	if h.Typeflag == tar.TypeDir {
		m.mode &^= 0o4000
	}
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		if h.Size < 0 || h.Size > opts.MaxBytes-st.Bytes {
			return fmt.Errorf("file of %d bytes makes the layer larger than %d bytes: %w", h.Size, opts.MaxBytes, ErrTooLarge)
		}
		if m.xattrs, err = xattrs(h, opts, st); err != nil {
			return err
		}
		if err := w.file(name, m, r, h.Size); err != nil {
			return err
		}
		st.Bytes += h.Size
		return nil
	case tar.TypeDir:
		if m.xattrs, err = xattrs(h, opts, st); err != nil {
			return err
		}
		return w.dir(name, m)
	case tar.TypeSymlink:
		if err := checkSymlink(name, h.Linkname); err != nil {
			return err
		}
		st.DroppedXattrs += len(xattrNames(h)) // user.* cannot be set on symlinks
		return w.symlink(name, h.Linkname, m)
	case tar.TypeLink:
		target, err := cleanName(h.Linkname)
		if err != nil {
			return fmt.Errorf("hardlink target %q: %w", h.Linkname, err)
		}
		if target == "." || target == name {
			return refused("hardlink to %q", h.Linkname)
		}
		return w.link(name, target)
	case tar.TypeFifo:
		return w.fifo(name, m)
	case tar.TypeChar, tar.TypeBlock:
		return refused("device node (type %q, %d:%d): layers may not carry devices", h.Typeflag, h.Devmajor, h.Devminor)
	default:
		return refused("unknown entry type %q", h.Typeflag)
	}
}

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// whiteout turns .wh.NAME and .wh..wh..opq into their overlayfs form.
func whiteout(w *writer, name string, st *Stats) error {
	dir, base := path.Split(name)
	if base == whiteoutOpaque {
		st.Opaques++
		return w.opaque(name)
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		return refused("unknown whiteout metadata %q", base)
	}
	target := strings.TrimPrefix(base, whiteoutPrefix)
	if target == "" || target == "." || target == ".." {
		return refused("whiteout of %q", target)
	}
	st.Whiteouts++
	return w.whiteout(path.Join(dir, target))
}

// cleanName returns the tar name n as a clean relative path ("." for the
// layer root), refusing absolute names and ".." components.
func cleanName(n string) (string, error) {
	if n == "" {
		return "", refused("empty name")
	}
	if strings.HasPrefix(n, "/") {
		return "", refused("absolute path (layer paths are relative)")
	}
	if strings.IndexByte(n, 0) >= 0 {
		return "", refused("NUL in name")
	}
	parts := strings.Split(n, "/")
	out := parts[:0]
	for _, p := range parts {
		switch p {
		case "", ".":
		case "..":
			return "", refused("path has a \"..\" component")
		default:
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return ".", nil
	}
	return strings.Join(out, "/"), nil
}

// checkSymlink refuses a symlink name -> target whose relative target
// climbs above the layer root. Absolute targets are kept: they resolve
// inside the container's root, and Unpack never follows symlinks.
func checkSymlink(name, target string) error {
	if target == "" {
		return refused("empty symlink target")
	}
	if strings.IndexByte(target, 0) >= 0 {
		return refused("NUL in symlink target")
	}
	if path.IsAbs(target) {
		return nil
	}
	if j := path.Join(path.Dir(name), target); j == ".." || strings.HasPrefix(j, "../") {
		return refused("symlink target %q climbs out of the layer", target)
	}
	return nil
}

const paxXattr = "SCHILY.xattr."

func xattrNames(h *tar.Header) []string {
	var names []string
	for k := range h.PAXRecords {
		if n, ok := strings.CutPrefix(k, paxXattr); ok {
			names = append(names, n)
		}
	}
	return names
}

// xattrs returns the xattrs of h to apply, counting the dropped ones.
func xattrs(h *tar.Header, opts Options, st *Stats) (map[string]string, error) {
	var out map[string]string
	for _, n := range xattrNames(h) {
		switch {
		case strings.HasPrefix(n, "user.overlay.") || strings.HasPrefix(n, "trusted.overlay."):
			return nil, refused("xattr %q would steer overlayfs", n)
		case strings.HasPrefix(n, "user."), n == "security.capability" && opts.KeepSetID:
			if out == nil {
				out = map[string]string{}
			}
			out[n] = h.PAXRecords[paxXattr+n]
		default:
			st.DroppedXattrs++
		}
	}
	return out, nil
}

// meta is what Unpack applies to an inode.
type meta struct {
	mode         uint32
	uid, gid     int
	mtime, atime time.Time
	xattrs       map[string]string
}

// decompress opens a layer compressed with gzip, zstd or nothing.
func decompress(r *bufio.Reader) (io.ReadCloser, error) {
	magic, _ := r.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		return gzip.NewReader(r)
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		d, err := zstd.NewReader(r, zstd.WithDecoderMaxMemory(64<<20), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	default:
		return io.NopCloser(r), nil
	}
}

// boundedReader stops at limit bytes and when ctx is done.
type boundedReader struct {
	ctx         context.Context
	r           io.Reader
	left, limit int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	if b.left <= 0 {
		// One byte more tells a stream that ends here from one that goes on.
		var one [1]byte
		if n, _ := b.r.Read(one[:]); n == 0 {
			return 0, io.EOF
		}
		return 0, fmt.Errorf("decompressed layer stream larger than %d bytes: %w", b.limit, ErrTooLarge)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}
