package cri

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestFormatLog(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	long := strings.Repeat("x", maxLogLine)
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{name: "one line", in: "hello\n", want: []string{"F hello"}},
		{name: "two lines", in: "a\nb\n", want: []string{"F a", "F b"}},
		{name: "unterminated", in: "a\nb", want: []string{"F a", "P b"}},
		{name: "empty line", in: "\n", want: []string{"F "}},
		{name: "exactly max", in: long + "\n", want: []string{"F " + long}},
		{name: "longer than max", in: long + "yz\n", want: []string{"P " + long, "F yz"}},
		{name: "long unterminated", in: long + long + "q", want: []string{"P " + long, "P " + long, "P q"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := string(formatLog(nil, now, "stdout", []byte(tt.in)))
			var got []string
			for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
				rest, ok := strings.CutPrefix(line, "2026-01-02T03:04:05.000000006Z stdout ")
				if !ok {
					t.Fatalf("line %q lacks the timestamp and stream", line)
				}
				got = append(got, rest)
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestLogRoundTrip is an oracle test: whatever the writes, joining the
// entries (P as is, F plus a newline) gives back the bytes written.
func TestLogRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "c.log")
	l, created, err := openContainerLog(path, time.Now, logRotation{maxSize: 1 << 30})
	if err != nil || !created {
		t.Fatalf("open = %v, created %v", err, created)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var want bytes.Buffer
	alphabet := []byte("ab \n")
	w := l.stream("stderr")
	for range 300 {
		n := rng.IntN(40)
		if rng.IntN(20) == 0 {
			n = maxLogLine + rng.IntN(100)
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
		want.Write(b)
	}
	l.Close()
	if _, err := w.Write([]byte("late")); err == nil {
		t.Error("write after Close succeeded")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		m := logLine.FindStringSubmatch(line)
		if m == nil || m[2] != "stderr" {
			t.Fatalf("bad line %q", line)
		}
		if len(m[4]) > maxLogLine {
			t.Fatalf("entry of %d bytes", len(m[4]))
		}
		got.WriteString(m[4])
		if m[3] == "F" {
			got.WriteByte('\n')
		}
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("round trip lost bytes: got %d, want %d", got.Len(), want.Len())
	}
}

// logFiles returns the files of the log at path, oldest first: the rotated
// ones by increasing sequence number, then the live one.
func logFiles(t *testing.T, path string) []string {
	t.Helper()
	seqs, err := rotatedSeqs(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range seqs {
		out = append(out, rotatedName(path, s))
	}
	return append(out, path)
}

// TestLogRotation: the log is rotated by size into <n>.log.<seq>, at most
// maxFiles files are kept, and the kept files, oldest first, hold the last
// entries written, whole and in order.
func TestLogRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c", "0.log")
	rot := logRotation{maxSize: 4096, maxFiles: 3}
	l, _, err := openContainerLog(path, time.Now, rot)
	if err != nil {
		t.Fatal(err)
	}
	w := l.stream("stdout")
	for i := range 1000 {
		fmt.Fprintf(w, "line %04d\n", i)
	}
	l.Close()
	files := logFiles(t, path)
	if len(files) != 3 || files[0] == path {
		t.Fatalf("files = %v, want 2 rotated and the live one", files)
	}
	var got []string
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > rot.maxSize {
			t.Errorf("%s has %d bytes, more than %d", f, fi.Size(), rot.maxSize)
		}
		data, _ := os.ReadFile(f)
		for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
			m := logLine.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("%s: bad line %q", f, line)
			}
			got = append(got, m[4])
		}
	}
	if got[len(got)-1] != "line 0999" {
		t.Errorf("last line %q, want line 0999", got[len(got)-1])
	}
	first := 0
	fmt.Sscanf(got[0], "line %d", &first)
	for i, g := range got {
		if want := fmt.Sprintf("line %04d", first+i); g != want {
			t.Fatalf("line %d is %q, want %q: a gap or a reordering", i, g, want)
		}
	}

	// Opened again with a smaller bound, the log deletes what it no longer keeps.
	l, _, err = openContainerLog(path, time.Now, logRotation{maxSize: 4096, maxFiles: 2})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if files := logFiles(t, path); len(files) != 2 {
		t.Errorf("after reopening with maxFiles 2: %v", files)
	}
}

// TestLogBoundedOnDisk: a container that prints 1 GiB at full speed leaves
// at most maxFiles × maxSize on disk (the default bound), and the writer
// allocates next to nothing while doing so, however large its writes.
func TestLogBoundedOnDisk(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c", "0.log")
	l, _, err := openContainerLog(path, time.Now, logRotation{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	w := l.stream("stdout")
	chunk := bytes.Repeat([]byte(strings.Repeat("x", 4095)+"\n"), 256) // 1 MiB of 4 KiB lines
	big := bytes.Repeat([]byte("y"), 64<<20)                           // one 64 MiB write, no newline
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if _, err := w.Write(big); err != nil {
		t.Fatal(err)
	}
	for range 1024 - 64 {
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Errorf("writing 1 GiB allocated %d bytes, want at most 4 MiB", alloc)
	}
	var total int64
	files := logFiles(t, path)
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		total += fi.Size()
	}
	if limit := int64(DefaultLogMaxFiles * DefaultLogMaxSize); total > limit || len(files) != DefaultLogMaxFiles {
		t.Errorf("%d files of %d bytes in all on disk, want %d files and at most %d bytes", len(files), total, DefaultLogMaxFiles, limit)
	}
}
