package quantity

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string // as a fraction; "" for an error
	}{
		{"500m", "1/2"}, {"2", "2/1"}, {"64Mi", "67108864/1"}, {"1G", "1000000000/1"}, {".5", "1/2"},
		{"1.5Ki", "1536/1"}, {"0", "0/1"},
		{"", ""}, {"1e3", ""}, {"-1", ""}, {"1 Mi", ""}, {"lots", ""}, {"5Ei", ""},
	} {
		q, err := Parse(tt.in)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("Parse(%q) = %v, want an error", tt.in, q)
		case tt.want != "" && (err != nil || q.String() != tt.want):
			t.Errorf("Parse(%q) = %v, %v, want %s", tt.in, q, err, tt.want)
		}
	}
	if _, err := Parse("5Ei"); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Parse(5Ei) = %v, want ErrTooLarge", err)
	}
}

func TestBytes(t *testing.T) {
	if n, err := Bytes("1500m"); err != nil || n != 2 {
		t.Errorf("Bytes(1500m) = %d, %v, want 2 (rounded up)", n, err)
	}
	if n, err := Bytes("512Mi"); err != nil || n != 512<<20 {
		t.Errorf("Bytes(512Mi) = %d, %v", n, err)
	}
	if _, err := Bytes("0"); err == nil {
		t.Error("Bytes(0): no error")
	}
}
