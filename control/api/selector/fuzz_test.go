package selector

import (
	"reflect"
	"strings"
	"testing"
)

// FuzzParseLabels checks that ParseLabels never panics, that its errors carry
// the documented prefix, and that the canonical form of a selector parses
// back to an equal selector with the same canonical form.
func FuzzParseLabels(f *testing.F) {
	for _, s := range []string{
		"", "a=b", "a==b", "a!=b", "a in (b,c)", "a notin (b)", "a", "!a",
		"a in ()", "a in (,b)", "in in (in)", " a = b , c ", "example.com/a=b",
		"a in (b", "a b", "a=b,", "!a=b", "a>1", "a=b=c", "a==", "a in((b))",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseLabels(s)
		if err != nil {
			if prefix := "invalid label selector "; !strings.HasPrefix(err.Error(), prefix) {
				t.Fatalf("ParseLabels(%q) error %q lacks the prefix %q", s, err, prefix)
			}
			return
		}
		canon := sel.String()
		again, err := ParseLabels(canon)
		if err != nil {
			t.Fatalf("ParseLabels(%q) = %q, which does not parse: %v", s, canon, err)
		}
		if !reflect.DeepEqual(sel, again) {
			t.Fatalf("ParseLabels(%q) = %#v; its canonical form %q parses to %#v", s, sel, canon, again)
		}
		if got := again.String(); got != canon {
			t.Fatalf("canonical form %q prints again as %q", canon, got)
		}
		if sel.Empty() != (canon == "") {
			t.Fatalf("ParseLabels(%q).Empty() = %v but its canonical form is %q", s, sel.Empty(), canon)
		}
	})
}

// FuzzParseFields checks the same properties for field selectors.
func FuzzParseFields(f *testing.F) {
	for _, s := range []string{
		"", "spec.nodeName=a", "spec.nodeName==a", "metadata.name!=b", `metadata.name=a\,b\=c\\`,
		"spec.nodeName=", " spec.nodeName = a , metadata.name!=b ", "x=1", "a=b,", `metadata.name=a\`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseFields(s, podFields)
		if err != nil {
			if prefix := "invalid field selector "; !strings.HasPrefix(err.Error(), prefix) {
				t.Fatalf("ParseFields(%q) error %q lacks the prefix %q", s, err, prefix)
			}
			return
		}
		canon := sel.String()
		again, err := ParseFields(canon, podFields)
		if err != nil {
			t.Fatalf("ParseFields(%q) = %q, which does not parse: %v", s, canon, err)
		}
		if !reflect.DeepEqual(sel, again) {
			t.Fatalf("ParseFields(%q) = %#v; its canonical form %q parses to %#v", s, sel, canon, again)
		}
		if got := again.String(); got != canon {
			t.Fatalf("canonical form %q prints again as %q", canon, got)
		}
	})
}
