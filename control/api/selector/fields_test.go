package selector

import (
	"fmt"
	"testing"
)

var podFields = []string{"spec.nodeName", "metadata.name", "status.phase"}

func TestParseFields(t *testing.T) {
	tests := []struct {
		name, in, want string // want is the canonical form
	}{
		{"empty selects everything", "", ""},
		{"blank selects everything", "  ", ""},
		{"equals", "spec.nodeName=node-1", "spec.nodeName=node-1"},
		{"double equals is written as equals", "spec.nodeName==node-1", "spec.nodeName=node-1"},
		{"not equals", "status.phase!=Running", "status.phase!=Running"},
		{"empty value", "spec.nodeName=", "spec.nodeName="},
		{"empty not-equals value", "spec.nodeName!=", "spec.nodeName!="},
		{"sorted by field", "status.phase=Running,metadata.name=a", "metadata.name=a,status.phase=Running"},
		{"blanks around fields and values", " spec.nodeName = n1 ,\tmetadata.name!=a ", "metadata.name!=a,spec.nodeName=n1"},
		{"escaped comma", `metadata.name=a\,b`, `metadata.name=a\,b`},
		{"escaped equals", `metadata.name=\=a`, `metadata.name=\=a`},
		{"escaped backslash", `metadata.name=a\\`, `metadata.name=a\\`},
		{"escaped backslash before comma", `metadata.name=a\\,status.phase=x`, `metadata.name=a\\,status.phase=x`},
		{"bang in a value", "metadata.name=a!", "metadata.name=a!"},
		{"value with a blank inside", "metadata.name=a b", "metadata.name=a b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel, err := ParseFields(tt.in, podFields)
			if err != nil {
				t.Fatalf("ParseFields(%q): %v", tt.in, err)
			}
			if got := sel.String(); got != tt.want {
				t.Errorf("ParseFields(%q).String() = %q, want %q", tt.in, got, tt.want)
			}
			if sel.Empty() != (tt.want == "") {
				t.Errorf("ParseFields(%q).Empty() = %v", tt.in, sel.Empty())
			}
		})
	}
}

func TestParseFieldsErrors(t *testing.T) {
	tests := []struct {
		name, in string
		known    []string
		want     string // follows `invalid field selector "in": `
	}{
		{"unknown field", "x=1", []string{"spec.nodeName", "metadata.name"}, `field "x" is not supported; supported: metadata.name, spec.nodeName`},
		{"no known fields", "x=1", nil, `field "x" is not supported; no fields are supported`},
		{"unknown second field", "metadata.name=a,spec.host=b", podFields, `field "spec.host" is not supported; supported: metadata.name, spec.nodeName, status.phase`},
		{"no operator", "metadata.name", podFields, `"metadata.name" at column 1 has no operator; want field=value, field==value or field!=value`},
		{"no operator in second term", "metadata.name=a, spec.nodeName", podFields, `"spec.nodeName" at column 18 has no operator; want field=value, field==value or field!=value`},
		{"no field", "=a", podFields, `missing field before "=" at column 1`},
		{"no field before not-equals", " != a", podFields, `missing field before "!=" at column 2`},
		{"trailing comma", "metadata.name=a,", podFields, `empty requirement at column 17`},
		{"double comma", "metadata.name=a,,status.phase=b", podFields, `empty requirement at column 17`},
		{"leading comma", ",metadata.name=a", podFields, `empty requirement at column 1`},
		{"unescaped equals in value", "metadata.name=a=b", podFields, `value for field "metadata.name": unescaped '=' at column 16; write \= for an '=' in a value`},
		{"not-equals inside a value", "metadata.name=a!=b", podFields, `value for field "metadata.name": unescaped '=' at column 17; write \= for an '=' in a value`},
		{"unknown escape", `metadata.name=a\nb`, podFields, `value for field "metadata.name": invalid escape "\\n" at column 16; only \\, \, and \= are allowed`},
		{"trailing backslash", `metadata.name=a\`, podFields, `value for field "metadata.name": '\' at column 16 ends the selector; write \\ for a backslash`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel, err := ParseFields(tt.in, tt.known)
			if err == nil {
				t.Fatalf("ParseFields(%q) = %q, want an error", tt.in, sel)
			}
			if want := fmt.Sprintf("invalid field selector %q: %s", tt.in, tt.want); err.Error() != want {
				t.Errorf("ParseFields(%q) error\n got: %s\nwant: %s", tt.in, err, want)
			}
		})
	}
}

func TestFieldsMatches(t *testing.T) {
	pod := map[string]string{"metadata.name": "web-1", "spec.nodeName": "node-1", "status.phase": "Running"}
	unscheduled := map[string]string{"metadata.name": "web-2"}
	tests := []struct {
		name, sel string
		obj       map[string]string
		want      bool
	}{
		{"empty", "", pod, true},
		{"equals", "spec.nodeName=node-1", pod, true},
		{"equals other", "spec.nodeName=node-2", pod, false},
		{"not equals", "spec.nodeName!=node-2", pod, true},
		{"not equals same", "spec.nodeName!=node-1", pod, false},
		{"unscheduled", "spec.nodeName=", unscheduled, true},
		{"scheduled is not unscheduled", "spec.nodeName=", pod, false},
		{"scheduled", "spec.nodeName!=", pod, true},
		{"all must hold", "spec.nodeName=node-1,status.phase!=Failed", pod, true},
		{"one fails", "spec.nodeName=node-1,status.phase=Failed", pod, false},
		{"escaped value", `metadata.name=web\,1`, map[string]string{"metadata.name": "web,1"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel, err := ParseFields(tt.sel, podFields)
			if err != nil {
				t.Fatal(err)
			}
			var asked []string
			got := sel.Matches(func(f string) string { asked = append(asked, f); return tt.obj[f] })
			if got != tt.want {
				t.Errorf("ParseFields(%q).Matches(%v) = %v, want %v", tt.sel, tt.obj, got, tt.want)
			}
			for _, f := range asked {
				if f != "metadata.name" && f != "spec.nodeName" && f != "status.phase" {
					t.Errorf("Matches asked for field %q, which the selector does not name", f)
				}
			}
		})
	}
}

func TestFieldsValue(t *testing.T) {
	tests := []struct {
		name, sel, field string
		want             string
		wantOK           bool
	}{
		{"equals", "spec.nodeName=node-1", "spec.nodeName", "node-1", true},
		{"double equals", "spec.nodeName==node-1", "spec.nodeName", "node-1", true},
		{"empty value", "spec.nodeName=", "spec.nodeName", "", true},
		{"not equals does not narrow", "spec.nodeName!=node-1", "spec.nodeName", "", false},
		{"other field", "metadata.name=a", "spec.nodeName", "", false},
		{"among others", "metadata.name=a,spec.nodeName!=x,spec.nodeName=node-2", "spec.nodeName", "node-2", true},
		{"unescaped", `metadata.name=a\,b`, "metadata.name", "a,b", true},
		{"empty selector", "", "spec.nodeName", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel, err := ParseFields(tt.sel, podFields)
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := sel.Value(tt.field); got != tt.want || ok != tt.wantOK {
				t.Errorf("ParseFields(%q).Value(%q) = %q, %v; want %q, %v", tt.sel, tt.field, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
