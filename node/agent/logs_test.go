package agent

import (
	"testing"
)

func TestParseCRILog(t *testing.T) {
	tests := []struct {
		name, in, want string
		wantErr        bool
	}{
		{"full lines", "2026-11-26T10:00:00.000000001Z stdout F hello\n2026-11-26T10:00:00.1Z stderr F oops\n", "hello\noops\n", false},
		{"partial then full", "2026-11-26T10:00:00Z stdout P abc\n2026-11-26T10:00:00Z stdout F def\n", "abcdef\n", false},
		{"empty line", "2026-11-26T10:00:00Z stdout F \n", "\n", false},
		{"content with spaces", "2026-11-26T10:00:00Z stdout F a b  c\n", "a b  c\n", false},
		{"garbage", "nonsense\n", "", true},
		{"bad tag", "2026-11-26T10:00:00Z stdout X a\n", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCRILog([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && string(got) != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
