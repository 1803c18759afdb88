package cri

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
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
	l, created, err := openContainerLog(path, time.Now)
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
