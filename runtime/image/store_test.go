package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

// module is a valid empty WebAssembly module (header only).
var module = []byte("\x00asm\x01\x00\x00\x00")

func wasmWith(body string) []byte { return append(append([]byte{}, module...), body...) }

func TestNormalizeRef(t *testing.T) {
	tests := []struct {
		name, in, want, err string
	}{
		{name: "bare", in: "hello", want: "hello:latest"},
		{name: "tag", in: "hello:v1.2", want: "hello:v1.2"},
		{name: "path", in: "team/hello-world", want: "team/hello-world:latest"},
		{name: "host and port", in: "registry.local:5000/a/b:x", want: "registry.local:5000/a/b:x"},
		{name: "separators", in: "a.b_c__d--e", want: "a.b_c__d--e:latest"},
		{name: "digest", in: "hello@sha256:" + strings.Repeat("ab", 32), want: "hello@sha256:" + strings.Repeat("ab", 32)},
		{name: "tag and digest", in: "hello:v1@sha256:" + strings.Repeat("0", 64), want: "hello:v1@sha256:" + strings.Repeat("0", 64)},
		{name: "empty", in: "", err: "invalid image name: empty"},
		{name: "uppercase", in: "Hello", err: `invalid image name "Hello": repository name must be lowercase`},
		{name: "bad char", in: "hel lo", err: `invalid character ' '`},
		{name: "empty tag", in: "hello:", err: "tag is empty"},
		{name: "bad tag", in: "hello:.x", err: `tag ".x" has invalid character '.'`},
		{name: "bad digest", in: "hello@sha256:abc", err: "is not sha256:<64 lowercase hex digits>"},
		{name: "leading separator", in: "-hello", err: "must start and end with a letter or digit"},
		{name: "bad separator", in: "a._b", err: `invalid separator "._"`},
		{name: "empty component", in: "a//b", err: "empty path component"},
		{name: "too long", in: strings.Repeat("a", 256), err: "longer than 255"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizeRef(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrInvalidName) {
					t.Fatalf("NormalizeRef(%q) = %q, %v; want error containing %q wrapping ErrInvalidName", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeRef(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustImport(t *testing.T, s *Store, name string, b []byte) Image {
	t.Helper()
	img, err := s.Import(context.Background(), name, bytes.NewReader(b))
	if err != nil {
		t.Fatalf("Import(%q): %v", name, err)
	}
	return img
}

func TestImportGetListRemove(t *testing.T) {
	s := openStore(t)
	// A module with a good header and a garbage body imports: validation is the runtime's job.
	img := mustImport(t, s, "hello", wasmWith("garbage"))
	if !strings.HasPrefix(img.ID, "sha256:") || len(img.ID) != 71 {
		t.Errorf("ID = %q", img.ID)
	}
	if img.Size != 15 || img.MediaType != "application/wasm" || fmt.Sprint(img.Names) != "[hello:latest]" {
		t.Errorf("image = %+v", img)
	}
	got, err := os.ReadFile(s.BlobPath(img))
	if err != nil || !bytes.Equal(got, wasmWith("garbage")) {
		t.Fatalf("blob = %q, %v", got, err)
	}

	second := mustImport(t, s, "hello:v2", wasmWith("garbage"))
	if second.ID != img.ID || fmt.Sprint(second.Names) != "[hello:latest hello:v2]" {
		t.Fatalf("same content under a second name = %+v", second)
	}
	hex := strings.TrimPrefix(img.ID, "sha256:")
	for _, ref := range []string{"hello", "hello:latest", "hello:v2", img.ID, hex, hex[:12], "sha256:" + hex[:13]} {
		got, err := s.Get(ref)
		if err != nil || got.ID != img.ID {
			t.Errorf("Get(%q) = %+v, %v", ref, got, err)
		}
	}
	for _, ref := range []string{"nope", hex[:11], "Bad Name", "sha256:" + strings.Repeat("f", 64)} {
		_, err := s.Get(ref)
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), ref) {
			t.Errorf("Get(%q) error = %v, want ErrNotFound naming the ref", ref, err)
		}
	}

	other := mustImport(t, s, "other", wasmWith("other"))
	list, err := s.List()
	if err != nil || len(list) != 2 {
		t.Fatalf("List = %+v, %v", list, err)
	}

	if err := s.Remove("hello"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.BlobPath(img)); err != nil {
		t.Errorf("blob removed while hello:v2 still refers to it: %v", err)
	}
	if err := s.Remove("hello"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove = %v, want ErrNotFound", err)
	}
	if err := s.Remove("hello:v2"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.BlobPath(img)); !os.IsNotExist(err) {
		t.Errorf("blob still there after its last name went: %v", err)
	}
	if err := s.Remove(other.ID); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.List(); len(list) != 0 {
		t.Errorf("List after removing all = %+v", list)
	}
}

func TestImportMovesName(t *testing.T) {
	s := openStore(t)
	v1 := mustImport(t, s, "app", wasmWith("one"))
	v2 := mustImport(t, s, "app", wasmWith("two"))
	if v1.ID == v2.ID {
		t.Fatal("different content, same ID")
	}
	got, err := s.Get("app")
	if err != nil || got.ID != v2.ID {
		t.Fatalf("Get(app) = %+v, %v; want %s", got, err, v2.ID)
	}
	if _, err := os.Stat(s.BlobPath(v1)); !os.IsNotExist(err) {
		t.Errorf("old blob not removed when its only name moved: %v", err)
	}
	if _, err := s.Get(v1.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(old ID) = %v, want ErrNotFound", err)
	}
}

func TestImportRejects(t *testing.T) {
	tests := []struct {
		name, ref, content, err string
	}{
		{name: "text", ref: "x", content: "#!/bin/sh\necho hi\n", err: `import image "x:latest": not a WebAssembly module: missing the \0asm magic`},
		{name: "short", ref: "x", content: "\x00as", err: "not a WebAssembly module: 3 bytes, shorter than the 8-byte header"},
		{name: "empty", ref: "x", content: "", err: "not a WebAssembly module: 0 bytes"},
		{name: "component", ref: "x", content: "\x00asm\x0d\x00\x01\x00", err: "WebAssembly component"},
		{name: "version", ref: "x", content: "\x00asm\x02\x00\x00\x00", err: "version 0x2 is not supported"},
		{name: "bad name", ref: "X", content: string(module), err: "invalid image name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			_, err := s.Import(context.Background(), tt.ref, strings.NewReader(tt.content))
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("Import error = %v, want it to contain %q", err, tt.err)
			}
			assertEmpty(t, s)
		})
	}
}

func TestImportCanceled(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Import(ctx, "x", bytes.NewReader(wasmWith("body")))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Import with canceled ctx = %v", err)
	}
	assertEmpty(t, s)
}

// assertEmpty checks that a failed import left nothing behind.
func assertEmpty(t *testing.T, s *Store) {
	t.Helper()
	if list, err := s.List(); err != nil || len(list) != 0 {
		t.Errorf("List = %+v, %v; want empty", list, err)
	}
	for _, dir := range []string{s.blobDir(), s.ingestDir()} {
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("%s holds %d files after a failed import", dir, len(entries))
		}
	}
}

// TestConcurrentWriters hammers one store from two Store values (as two
// processes would: each takes the flock on its own open file) and checks
// that no update is lost.
func TestConcurrentWriters(t *testing.T) {
	root := t.TempDir()
	a, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		for j, s := range []*Store{a, b} {
			wg.Go(func() {
				_, err := s.Import(context.Background(), fmt.Sprintf("img-%d-%d", j, i), bytes.NewReader(wasmWith(fmt.Sprint(i))))
				errs <- err
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	list, err := a.List()
	if err != nil {
		t.Fatal(err)
	}
	names := 0
	for _, img := range list {
		names += len(img.Names)
	}
	if len(list) != n || names != 2*n {
		t.Fatalf("got %d images with %d names, want %d with %d", len(list), names, n, 2*n)
	}
}

func TestUsage(t *testing.T) {
	s := openStore(t)
	mustImport(t, s, "a", wasmWith("0123456789"))
	u, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if u.Dir == "" || u.UsedBytes < 18 || u.Inodes < 5 {
		t.Errorf("Usage = %+v", u)
	}
}
