package layer_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"skiff.dev/skiff/runtime/image/layer"
	"skiff.dev/skiff/runtime/image/layer/layertest"
)

type ent = layertest.Entry

// The entries and tars of these tests are layertest's, which the image
// store's tests use too.
var (
	mtime = layertest.MTime
	reg   = layertest.Reg
	dir   = layertest.Dir
	sym   = layertest.Sym
	hard  = layertest.Hard
	dev   = layertest.Dev
	mktar = layertest.Tar
)

func gz(tb testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func zst(tb testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		tb.Fatal(err)
	}
	zw.Write(b)
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func isRoot() bool { return os.Geteuid() == 0 }

func lstat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatalf("lstat: %v", err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

func TestUnpackGoodLayer(t *testing.T) {
	owned := reg("data/owned", "mine", 0o640)
	owned.H.Uid, owned.H.Gid = 1000, 1001
	xa := reg("etc/xattrs", "x", 0o644)
	xa.H.PAXRecords = map[string]string{"SCHILY.xattr.user.note": "hello", "SCHILY.xattr.security.selinux": "system_u:object_r:etc_t:s0"}
	fifo := ent{H: tar.Header{Typeflag: tar.TypeFifo, Name: "run/fifo", Mode: 0o644, ModTime: mtime}}
	es := []ent{
		dir("./", 0o755),
		dir("etc/", 0o755),
		reg("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644),
		xa,
		dir("bin", 0o755),
		reg("bin/sh", "#!shell", 0o755),
		reg("bin/su", "setuid binary", 0o4755),
		hard("bin/sh2", "bin/sh"),
		reg("usr/bin/tool", "implicit parents", 0o700),
		sym("lib", "usr/lib"),
		sym("etc/abs", "/etc/passwd"),
		sym("etc/up", "../bin/sh"),
		dir("tmp", 0o1777),
		dir("ro/", 0o555),
		reg("ro/inside", "written before ro applies", 0o444),
		dir("sgid/", 0o2775),
		reg("dup", "one", 0o644),
		reg("dup", "two", 0o600),
		reg("was-dir/child", "gone", 0o644),
		reg("was-dir", "now a file", 0o644),
		fifo,
		owned,
	}
	es = append(es,
		dir("old", 0o755),
		reg("old/.wh.gone", "", 0o644),
		reg("kept", "same layer", 0o644),
		reg(".wh.kept", "", 0o644), // hides lower layers only
	)
	if isRoot() {
		es = append(es,
			dir("opq", 0o755),
			reg("opq/.wh..wh..opq", "", 0o644),
			reg("opq/new", "n", 0o644),
		)
	} else {
		t.Log("not root: opaque directories and ownership are not checked (they need trusted xattrs and chown)")
	}
	for _, c := range []struct {
		name string
		enc  func(testing.TB, []byte) []byte
	}{
		{"plain", func(_ testing.TB, b []byte) []byte { return b }},
		{"gzip", gz},
		{"zstd", zst},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := filepath.Join(t.TempDir(), "layer")
			t.Cleanup(func() { os.Chmod(filepath.Join(d, "ro"), 0o755) }) // so that TempDir can remove it without root
			st, err := layer.Unpack(context.Background(), bytes.NewReader(c.enc(t, mktar(t, es...))), d, layer.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if st.Entries != len(es) {
				t.Errorf("Entries = %d, want %d", st.Entries, len(es))
			}
			if st.DroppedXattrs != 1 {
				t.Errorf("DroppedXattrs = %d, want 1 (security.selinux)", st.DroppedXattrs)
			}
			wantFile := func(name, body string, mode fs.FileMode) {
				t.Helper()
				b, err := os.ReadFile(filepath.Join(d, name))
				if err != nil || string(b) != body {
					t.Errorf("%s = %q, %v; want %q", name, b, err, body)
					return
				}
				fi, _ := os.Lstat(filepath.Join(d, name))
				if fi.Mode() != mode {
					t.Errorf("%s mode = %v, want %v", name, fi.Mode(), mode)
				}
				if !fi.ModTime().Equal(mtime) {
					t.Errorf("%s mtime = %v, want %v", name, fi.ModTime(), mtime)
				}
			}
			wantFile("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644)
			wantFile("bin/su", "setuid binary", 0o755) // setuid dropped
			wantFile("usr/bin/tool", "implicit parents", 0o700)
			wantFile("ro/inside", "written before ro applies", 0o444)
			wantFile("dup", "two", 0o600)
			wantFile("was-dir", "now a file", 0o644)
			wantFile("bin/sh2", "#!shell", 0o755)
			if a, b := lstat(t, filepath.Join(d, "bin/sh")), lstat(t, filepath.Join(d, "bin/sh2")); a.Ino != b.Ino {
				t.Errorf("bin/sh2 is not a hardlink of bin/sh")
			}
			for name, target := range map[string]string{"lib": "usr/lib", "etc/abs": "/etc/passwd", "etc/up": "../bin/sh"} {
				if got, err := os.Readlink(filepath.Join(d, name)); err != nil || got != target {
					t.Errorf("readlink %s = %q, %v; want %q", name, got, err, target)
				}
			}
			for name, mode := range map[string]fs.FileMode{".": 0o755, "tmp": 0o777 | fs.ModeSticky, "ro": 0o555, "usr": 0o755, "sgid": 0o775 | fs.ModeSetgid} {
				fi, err := os.Lstat(filepath.Join(d, name))
				if err != nil || fi.Mode() != mode|fs.ModeDir {
					t.Errorf("%s: %v, %v; want directory %v", name, fi.Mode(), err, mode)
				}
				if name != "usr" && !fi.ModTime().Equal(mtime) {
					t.Errorf("%s mtime = %v, want %v", name, fi.ModTime(), mtime)
				}
			}
			if fi, err := os.Lstat(filepath.Join(d, "run/fifo")); err != nil || fi.Mode() != fs.ModeNamedPipe|0o644 {
				t.Errorf("run/fifo: %v, %v", fi.Mode(), err)
			}
			buf := make([]byte, 64)
			if n, err := unix.Getxattr(filepath.Join(d, "etc/xattrs"), "user.note", buf); err != nil || string(buf[:n]) != "hello" {
				t.Errorf("user.note = %q, %v", buf[:n], err)
			}
			if _, err := unix.Getxattr(filepath.Join(d, "etc/xattrs"), "security.selinux", buf); err == nil && isRoot() {
				// selinux may label files itself; only fail if ours stuck.
				if n, _ := unix.Getxattr(filepath.Join(d, "etc/xattrs"), "security.selinux", buf); string(buf[:n]) == "system_u:object_r:etc_t:s0" {
					t.Errorf("security.selinux from the layer was applied")
				}
			}
			if s := lstat(t, filepath.Join(d, "old/gone")); s.Mode&unix.S_IFMT != unix.S_IFCHR || s.Rdev != 0 {
				t.Errorf("old/gone is not a 0/0 character device: mode %o rdev %d", s.Mode, s.Rdev)
			}
			if _, err := os.Lstat(filepath.Join(d, "old/.wh.gone")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("old/.wh.gone was written as is: %v", err)
			}
			wantFile("kept", "same layer", 0o644)
			if st.Whiteouts != 2 {
				t.Errorf("Whiteouts = %d, want 2", st.Whiteouts)
			}
			if !isRoot() {
				return
			}
			if s := lstat(t, filepath.Join(d, "data/owned")); s.Uid != 1000 || s.Gid != 1001 {
				t.Errorf("data/owned owner = %d:%d, want 1000:1001", s.Uid, s.Gid)
			}
			if st.Opaques != 1 {
				t.Errorf("Opaques = %d, want 1", st.Opaques)
			}
			if n, err := unix.Getxattr(filepath.Join(d, "opq"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
				t.Errorf("opq trusted.overlay.opaque = %q, %v; want y", buf[:n], err)
			}
			wantFile("opq/new", "n", 0o644)
		})
	}
}

func TestUnpackKeepSetID(t *testing.T) {
	d := filepath.Join(t.TempDir(), "layer")
	if _, err := layer.Unpack(context.Background(), bytes.NewReader(mktar(t, reg("su", "x", 0o6755))), d, layer.Options{KeepSetID: true}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(filepath.Join(d, "su"))
	if err != nil || fi.Mode() != 0o755|fs.ModeSetuid|fs.ModeSetgid {
		t.Errorf("su: %v, %v; want setuid and setgid kept", fi.Mode(), err)
	}
}

// snapshot records every file under root: type, mode, owner, content,
// link target.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		s := fi.Sys().(*syscall.Stat_t)
		v := fmt.Sprintf("%v %d:%d %d", fi.Mode(), s.Uid, s.Gid, s.Nlink)
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += " " + string(b)
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			v += " -> " + l
		}
		out[p] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestUnpackRefusesMaliciousLayers(t *testing.T) {
	for _, tc := range layertest.Malicious() {
		tt := struct {
			name    string
			entries func(base string) []ent
			opts    layer.Options
			entry   string
			is      error
		}{tc.Name, tc.Entries, tc.Opts, tc.Entry, tc.Is}
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			sentinel := filepath.Join(base, "sentinel")
			if err := os.MkdirAll(filepath.Join(sentinel, "etc"), 0o755); err != nil {
				t.Fatal(err)
			}
			for name, body := range map[string]string{"passwd": "root:x:0:0\n", "etc/shadow": "secret\n", "evil": "untouched\n"} {
				if err := os.WriteFile(filepath.Join(sentinel, name), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			before := snapshot(t, base)
			d := filepath.Join(base, "layer")
			_, err := layer.Unpack(context.Background(), bytes.NewReader(gz(t, mktar(t, tt.entries(base)...))), d, tt.opts)
			if err == nil {
				t.Fatal("Unpack succeeded")
			}
			t.Log(err)
			if !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			var ee *layer.EntryError
			if !errors.As(err, &ee) || !strings.HasSuffix(ee.Entry, tt.entry) {
				t.Errorf("error %v does not name entry %q", err, tt.entry)
			}
			if _, err := os.Lstat(d); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("layer directory left behind: %v", err)
			}
			if after := snapshot(t, base); !maps.Equal(before, after) {
				t.Errorf("outside the layer changed:\nbefore %q\nafter  %q", before, after)
			}
		})
	}
}

func TestUnpackStreamBomb(t *testing.T) {
	// A whiteout entry carrying a body: no file is written, but the
	// decompressed stream is still bounded.
	e := reg(".wh.x", strings.Repeat("\x00", 8<<20), 0o644)
	d := filepath.Join(t.TempDir(), "layer")
	_, err := layer.Unpack(context.Background(), bytes.NewReader(gz(t, mktar(t, e))), d, layer.Options{MaxBytes: 1 << 20, MaxEntries: 10})
	if !errors.Is(err, layer.ErrTooLarge) {
		t.Fatalf("Unpack = %v, want ErrTooLarge", err)
	}
	if _, err := os.Lstat(d); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("layer directory left behind: %v", err)
	}
}

func TestUnpackCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d := filepath.Join(t.TempDir(), "layer")
	_, err := layer.Unpack(ctx, bytes.NewReader(mktar(t, reg("a", "x", 0o644))), d, layer.Options{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Unpack = %v, want context.Canceled", err)
	}
	if _, err := os.Lstat(d); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("layer directory left behind: %v", err)
	}
}

// cancelReader cancels its context once the first bytes are read.
type cancelReader struct {
	r      *bytes.Reader
	cancel func()
}

func (c *cancelReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.cancel()
	return n, err
}

func TestUnpackCancelledMidway(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := filepath.Join(t.TempDir(), "layer")
	b := mktar(t, reg("a", strings.Repeat("a", 1<<20), 0o644), reg("b", "x", 0o644))
	_, err := layer.Unpack(ctx, &cancelReader{bytes.NewReader(b), cancel}, d, layer.Options{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Unpack = %v, want context.Canceled", err)
	}
	if _, err := os.Lstat(d); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("layer directory left behind: %v", err)
	}
}

func TestUnpackExistingDirectoryIsKept(t *testing.T) {
	d := t.TempDir()
	if err := os.WriteFile(filepath.Join(d, "mine"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := layer.Unpack(context.Background(), bytes.NewReader(mktar(t, reg("a", "x", 0o644))), d, layer.Options{}); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Unpack into an existing directory = %v, want ErrExist", err)
	}
	if b, err := os.ReadFile(filepath.Join(d, "mine")); err != nil || string(b) != "keep" {
		t.Errorf("existing directory touched: %q, %v", b, err)
	}
}

func TestUnpackCorruptStream(t *testing.T) {
	good := gz(t, mktar(t, reg("a", strings.Repeat("a", 4096), 0o644)))
	bad := append([]byte{}, good...)
	bad[len(bad)-5] ^= 0xff // the gzip CRC
	d := filepath.Join(t.TempDir(), "layer")
	if _, err := layer.Unpack(context.Background(), bytes.NewReader(bad), d, layer.Options{}); err == nil {
		t.Fatal("Unpack of a layer with a bad gzip checksum succeeded")
	}
	if _, err := os.Lstat(d); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("layer directory left behind: %v", err)
	}
}

func BenchmarkUnpack(b *testing.B) {
	var es []ent
	small := strings.Repeat("s", 1024)
	var total int64
	for i := range 1000 {
		if i%100 == 0 {
			es = append(es, dir(fmt.Sprintf("d%d", i/100), 0o755))
		}
		es = append(es, reg(fmt.Sprintf("d%d/f%d", i/100, i), small, 0o644))
		total += int64(len(small))
	}
	es = append(es, reg("big", strings.Repeat("b", 10<<20), 0o644))
	total += 10 << 20
	plain := mktar(b, es...)
	for _, c := range []struct {
		name string
		data []byte
	}{{"plain", plain}, {"gzip", gz(b, plain)}, {"zstd", zst(b, plain)}} {
		b.Run(c.name, func(b *testing.B) {
			base := b.TempDir()
			b.SetBytes(total)
			i := 0
			for b.Loop() {
				d := filepath.Join(base, fmt.Sprint(i))
				i++
				if _, err := layer.Unpack(context.Background(), bytes.NewReader(c.data), d, layer.Options{}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := os.RemoveAll(d); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

func TestUnpackOpaqueWithoutRoot(t *testing.T) {
	if isRoot() {
		t.Skip("runs without root only: as root, opaque directories are marked (TestUnpackGoodLayer)")
	}
	d := filepath.Join(t.TempDir(), "layer")
	_, err := layer.Unpack(context.Background(), bytes.NewReader(mktar(t, reg("d/.wh..wh..opq", "", 0o644))), d, layer.Options{})
	if !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), "needs root") {
		t.Errorf("Unpack of an opaque directory without root = %v, want an error saying it needs root", err)
	}
	if _, err := os.Lstat(d); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("layer directory left behind: %v", err)
	}
}
