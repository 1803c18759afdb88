package image

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// mountedLowerdirs returns the lowerdirs of the overlays mounted in this
// process's mount namespace, read from /proc/self/mountinfo.
func mountedLowerdirs() (map[string]bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		for _, l := range overlayLowerdirs(sc.Text()) {
			out[l] = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	return out, nil
}

// overlayLowerdirs returns the lowerdirs of one mountinfo line if it is an
// overlay, else nil. The line is
//
//	id parent maj:min root mountpoint options [optional...] - fstype source superoptions
//
// The kernel shows lowerdir as the mounter gave it (layers separated by
// ":", data-only layers by "::", a literal ":", "," or "\" in a path
// escaped by a backslash), itself escaped for mountinfo: space, tab,
// newline, backslash and comma as octal \ooo. So a path "/a b,1" given as
// "/a b\,1" shows as "/a\040b\134\0541".
func overlayLowerdirs(line string) []string {
	_, after, ok := strings.Cut(line, " - ")
	if !ok {
		return nil
	}
	f := strings.Fields(after)
	if len(f) < 3 || f[0] != "overlay" {
		return nil
	}
	var out []string
	for _, opt := range strings.Split(f[2], ",") {
		v, ok := strings.CutPrefix(opt, "lowerdir=")
		if !ok {
			v, ok = strings.CutPrefix(opt, "lowerdir+=")
		}
		if !ok {
			continue
		}
		out = append(out, splitLowerdir(unoctal(v))...)
	}
	return out
}

// unoctal undoes mountinfo's \ooo escapes.
func unoctal(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+3 < len(v) && isOctal(v[i+1]) && isOctal(v[i+2]) && isOctal(v[i+3]) {
			b.WriteByte((v[i+1]-'0')<<6 | (v[i+2]-'0')<<3 | (v[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// splitLowerdir splits a lowerdir value, as the mounter wrote it, into its
// paths.
func splitLowerdir(v string) []string {
	var out []string
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			out = append(out, cur.String())
		}
		cur.Reset()
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && i+1 < len(v):
			cur.WriteByte(v[i+1])
			i++
		case c == ':':
			flush()
		default:
			cur.WriteByte(c)
		}
	}
	flush()
	return out
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
