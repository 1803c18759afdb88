package selector

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseLabels(t *testing.T) {
	long := strings.Repeat("a", 63)
	tests := []struct {
		name, in, want string // want is the canonical form
	}{
		{"empty selects everything", "", ""},
		{"blank selects everything", " \t\n", ""},
		{"equals", "app=web", "app=web"},
		{"double equals is written as equals", "app==web", "app=web"},
		{"not equals", "app!=web", "app!=web"},
		{"empty value", "app=", "app="},
		{"empty value before comma", "app==,b", "app=,b"},
		{"empty not-equals value", "app!=", "app!="},
		{"in", "env in (prod,dev)", "env in (dev,prod)"},
		{"notin", "env notin (prod)", "env notin (prod)"},
		{"set values are sorted and distinct", "env in (b,a,b)", "env in (a,b)"},
		{"empty parens are the empty value", "env in ()", "env in ()"},
		{"empty item in a set", "env in (a,)", "env in (,a)"},
		{"leading empty item in a set", "env in (,a)", "env in (,a)"},
		{"only commas in a set", "env in (,,)", "env in ()"},
		{"exists", "app", "app"},
		{"does not exist", "!app", "!app"},
		{"requirements sorted by key", "z=1,a=2,m", "a=2,m,z=1"},
		{"same key keeps its order", "a!=2,a!=1", "a!=2,a!=1"},
		{"blanks around every token", "  app = web ,\tenv in ( a , b ) ,\n! canary ", "app=web,!canary,env in (a,b)"},
		{"no blank before paren", "env in(a)", "env in (a)"},
		{"no blank after comma", "a=1,b!=2", "a=1,b!=2"},
		{"prefixed key", "example.com/app=web", "example.com/app=web"},
		{"key with dots, dashes and underscores", "a.b-c_d=x.y-z_w", "a.b-c_d=x.y-z_w"},
		{"uppercase key and value", "App=Web", "App=Web"},
		{"in is a key when first", "in in (in,notin)", "in in (in,notin)"},
		{"notin as exists key", "notin", "notin"},
		{"in as a value", "a=in", "a=in"},
		{"63-character key and value", long + "=" + long, long + "=" + long},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel, err := ParseLabels(tt.in)
			if err != nil {
				t.Fatalf("ParseLabels(%q): %v", tt.in, err)
			}
			if got := sel.String(); got != tt.want {
				t.Errorf("ParseLabels(%q).String() = %q, want %q", tt.in, got, tt.want)
			}
			if sel.Empty() != (tt.want == "") {
				t.Errorf("ParseLabels(%q).Empty() = %v", tt.in, sel.Empty())
			}
		})
	}
}

func TestParseLabelsErrors(t *testing.T) {
	long := strings.Repeat("a", 64)
	tests := []struct {
		name, in, want string // want follows `invalid label selector "in": `
	}{
		{"unclosed set", "a in (b", `missing ')' after "b"`},
		{"unclosed empty set", "a in (", `missing ')' after "("`},
		{"unclosed set after comma", "a in (b,", `missing ')' after ","`},
		{"two keys", "a b", `unexpected "b" at column 3 after key "a"; want an operator (=, ==, !=, in, notin), ',' or the end`},
		{"set without parens", "a in b", `unexpected "b" at column 6 after "in"; want '('`},
		{"in at the end", "a in", `missing '(' and a list of values after "in"`},
		{"notin at the end", "a notin", `missing '(' and a list of values after "notin"`},
		{"blank between set values", "a in (b c)", `unexpected "c" at column 9 after "b"; want ',' or ')'`},
		{"nested parens", "a in ((b))", `unexpected "(" at column 7 after "("; want ',' or ')'`},
		{"trailing comma", "a=b,", `missing requirement after ',' at column 4`},
		{"leading comma", ",a", `missing requirement before ',' at column 1`},
		{"double comma", "a,,b", `missing requirement before ',' at column 3`},
		{"only a comma", ",", `missing requirement before ',' at column 1`},
		{"no key", "=b", `missing key before "=" at column 1`},
		{"no key before not-equals", " != b", `missing key before "!=" at column 2`},
		{"value after value", "a=b c", `unexpected "c" at column 5 after "b"; want ',' or the end`},
		{"two operators", "a=b=c", `unexpected "=" at column 4 after "b"; want ',' or the end`},
		{"split double equals", "a= =b", `unexpected "=" at column 4 after "="; want a value, ',' or the end`},
		{"triple equals", "a===b", `unexpected "=" at column 4 after "=="; want a value, ',' or the end`},
		{"paren after equals", "a=(b)", `unexpected "(" at column 3 after "="; want a value, ',' or the end`},
		{"operator after does-not-exist", "!a=b", `unexpected "=" at column 3 after "!a"; a does-not-exist requirement takes no operator or value`},
		{"set after does-not-exist", "!a in (b)", `unexpected "in" at column 4 after "!a"; a does-not-exist requirement takes no operator or value`},
		{"bang alone", "!", `missing key after "!"`},
		{"bang before comma", "!,a", `unexpected "," at column 2 after "!"; want a key`},
		{"double bang", "!!a", `unexpected "!" at column 2 after "!"; want a key`},
		{"closing paren first", ")", `unexpected ")" at column 1; want a key or '!'`},
		{"greater than", "a>1", `unsupported operator ">" at column 2; want =, ==, !=, in or notin`},
		{"less than", "a < 1", `unsupported operator "<" at column 3; want =, ==, !=, in or notin`},
		{"bad key characters", "a$b=c", `invalid key "a$b" at column 1: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character`},
		{"key ends with dash", "x,a-=c", `invalid key "a-" at column 3: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character`},
		{"key too long", long + "=c", `invalid key "` + long + `" at column 1: name part must be no more than 63 characters`},
		{"uppercase prefix", "Example.com/a", `invalid key "Example.com/a" at column 1: ` + prefixMsg},
		{"empty prefix", "/a", `invalid key "/a" at column 1: prefix part must be non-empty`},
		{"empty name", "example.com/", `invalid key "example.com/" at column 1: name part must be non-empty`},
		{"two slashes", "a/b/c", `invalid key "a/b/c" at column 1: ` + qualifiedMsg},
		{"bad does-not-exist key", "!-a", `invalid key "-a" at column 2: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character`},
		{"bad value", "a=b$", `invalid value "b$" for key "a" at column 3: ` + valueMsg},
		{"value too long", "a=" + long, `invalid value "` + long + `" for key "a" at column 3: must be no more than 63 characters`},
		{"bad set value", "a notin (b, -c)", `invalid value "-c" for key "a" at column 13: ` + valueMsg},
		{"non-ASCII blank is not a blank", "a=\u00a0b", `invalid value "\u00a0b" for key "a" at column 3: ` + valueMsg},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel, err := ParseLabels(tt.in)
			if err == nil {
				t.Fatalf("ParseLabels(%q) = %q, want an error", tt.in, sel)
			}
			if want := fmt.Sprintf("invalid label selector %q: %s", tt.in, tt.want); err.Error() != want {
				t.Errorf("ParseLabels(%q) error\n got: %s\nwant: %s", tt.in, err, want)
			}
		})
	}
}

func TestLabelsMatches(t *testing.T) {
	labels := map[string]string{"app": "web", "env": "prod", "empty": "", "example.com/team": "a"}
	tests := []struct {
		name, sel string
		labels    map[string]string
		want      bool
	}{
		{"empty selector, no labels", "", nil, true},
		{"empty selector", "", labels, true},
		{"equals", "app=web", labels, true},
		{"equals other value", "app=db", labels, false},
		{"equals absent key", "tier=web", labels, false},
		{"equals empty value", "empty=", labels, true},
		{"equals empty value, absent key", "tier=", labels, false},
		{"double equals", "app==web", labels, true},
		{"not equals", "app!=db", labels, true},
		{"not equals same value", "app!=web", labels, false},
		{"not equals absent key", "tier!=web", labels, true},
		{"not equals on nil labels", "tier!=web", nil, true},
		{"in", "env in (dev,prod)", labels, true},
		{"in other values", "env in (dev,test)", labels, false},
		{"in absent key", "tier in (a)", labels, false},
		{"in with empty value", "empty in (,x)", labels, true},
		{"empty set matches empty value", "empty in ()", labels, true},
		{"empty set, absent key", "tier in ()", labels, false},
		{"notin", "env notin (dev,test)", labels, true},
		{"notin its value", "env notin (dev,prod)", labels, false},
		{"notin absent key", "tier notin (a)", labels, true},
		{"exists", "app", labels, true},
		{"exists with empty value", "empty", labels, true},
		{"exists absent", "tier", labels, false},
		{"does not exist", "!tier", labels, true},
		{"does not exist, present", "!app", labels, false},
		{"does not exist, present empty", "!empty", labels, false},
		{"prefixed key", "example.com/team=a", labels, true},
		{"all must hold", "app=web,env=prod,!tier", labels, true},
		{"one fails", "app=web,env=dev", labels, false},
		{"contradiction", "app=web,app!=web", labels, false},
		{"case matters", "app=Web", labels, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel, err := ParseLabels(tt.sel)
			if err != nil {
				t.Fatal(err)
			}
			if got := sel.Matches(tt.labels); got != tt.want {
				t.Errorf("ParseLabels(%q).Matches(%v) = %v, want %v", tt.sel, tt.labels, got, tt.want)
			}
		})
	}
}

func TestLabelsZeroValue(t *testing.T) {
	var sel Labels
	if !sel.Empty() || !sel.Matches(nil) || sel.String() != "" {
		t.Errorf("zero Labels: Empty=%v Matches(nil)=%v String=%q; want true, true, \"\"", sel.Empty(), sel.Matches(nil), sel.String())
	}
}
