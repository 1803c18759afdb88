package image

import (
	"slices"
	"testing"
)

func TestOverlayLowerdirs(t *testing.T) {
	tests := []struct {
		name, line string
		want       []string
	}{
		{"not an overlay", `36 35 98:0 / /mnt rw,noatime master:1 - ext4 /dev/root rw,errors=continue`, nil},
		{"two layers", `72 30 0:45 / /run/c/rootfs rw,relatime - overlay overlay rw,lowerdir=/s/snapshots/aa:/s/snapshots/bb,upperdir=/u,workdir=/w`, []string{"/s/snapshots/aa", "/s/snapshots/bb"}},
		// As Linux 6.18 shows lowerdir="/tmp/a store\, 1/l1:/tmp/l2".
		{"octal escapes", `44 27 0:39 / /tmp/t ro,relatime - overlay overlay ro,lowerdir=/tmp/a\040store\134\054\0401/l1:/tmp/l2,redirect_dir=on`, []string{"/tmp/a store, 1/l1", "/tmp/l2"}},
		{"escaped backslash", `44 27 0:39 / /tmp/t ro - overlay overlay ro,lowerdir=/a\134\134b:/c`, []string{`/a\b`, "/c"}},
		{"backslash-escaped colon (older kernels)", `72 30 0:45 / /x rw - overlay overlay ro,lowerdir=/b\:c:/d`, []string{"/b:c", "/d"}},
		{"data-only layers", `72 30 0:45 / /x rw - overlay overlay ro,lowerdir=/a::/b`, []string{"/a", "/b"}},
		{"optional fields", `72 30 0:45 / /x rw shared:5 master:2 - overlay none rw,lowerdir=/a`, []string{"/a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := overlayLowerdirs(tt.line); !slices.Equal(got, tt.want) {
				t.Errorf("overlayLowerdirs = %q, want %q", got, tt.want)
			}
		})
	}
}
