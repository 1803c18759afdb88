package selector

import (
	"fmt"
	"slices"
	"strings"
)

// Fields is a parsed field selector: a list of field=value and field!=value
// requirements that must all hold. The zero value selects everything.
type Fields struct {
	reqs []fieldRequirement // sorted by field, stable
}

type fieldRequirement struct {
	field, value string
	not          bool // field!=value
}

// ParseFields parses a field selector in Kubernetes' syntax: comma-separated
// requirements field=value, field==value or field!=value, where field is one
// of known. Blanks around fields and values are ignored. In a value, '\'
// escapes a ',', '=' or '\' that belongs to it; an unescaped ',' ends the
// requirement and an unescaped '=' is an error. A value may be empty:
// spec.nodeName= selects objects with no node. An empty or blank string
// selects everything.
//
// An error starts with `invalid field selector "s": ` and says what is wrong
// and where.
func ParseFields(s string, known []string) (Fields, error) {
	errorf := func(format string, args ...any) error {
		return fmt.Errorf("invalid field selector %q: "+format, append([]any{s}, args...)...)
	}
	if strings.Trim(s, " \t\r\n") == "" {
		return Fields{}, nil
	}
	var reqs []fieldRequirement
	for start := 0; ; {
		end := termEnd(s, start)
		r, err := parseFieldTerm(s[start:end], start, known)
		if err != nil {
			return Fields{}, errorf("%s", err)
		}
		reqs = append(reqs, r)
		if end == len(s) {
			break
		}
		start = end + 1
	}
	slices.SortStableFunc(reqs, func(a, b fieldRequirement) int { return strings.Compare(a.field, b.field) })
	return Fields{reqs: reqs}, nil
}

// termEnd returns the offset of the first unescaped ',' in s from start, or
// len(s).
func termEnd(s string, start int) int {
	for i := start; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case ',':
			return i
		}
	}
	return len(s)
}

// parseFieldTerm parses the requirement term that starts at offset pos of
// the selector; its errors name columns of the whole selector.
func parseFieldTerm(term string, pos int, known []string) (fieldRequirement, error) {
	col := func(i int) int { return pos + i + 1 }
	lead := len(term) - len(strings.TrimLeft(term, " \t\r\n"))
	if lead == len(term) {
		return fieldRequirement{}, fmt.Errorf("empty requirement at column %d", col(0))
	}
	opAt, opLen, not := -1, 0, false
	for i := 0; i < len(term) && opAt < 0; i++ {
		switch {
		case term[i] == '\\':
			i++
		case strings.HasPrefix(term[i:], "!="):
			opAt, opLen, not = i, 2, true
		case strings.HasPrefix(term[i:], "=="):
			opAt, opLen = i, 2
		case term[i] == '=':
			opAt, opLen = i, 1
		}
	}
	if opAt < 0 {
		return fieldRequirement{}, fmt.Errorf("%q at column %d has no operator; want field=value, field==value or field!=value", strings.Trim(term, " \t\r\n"), col(lead))
	}
	field := strings.Trim(term[:opAt], " \t\r\n")
	if field == "" {
		return fieldRequirement{}, fmt.Errorf("missing field before %q at column %d", term[opAt:opAt+opLen], col(opAt))
	}
	if !slices.Contains(known, field) {
		return fieldRequirement{}, fmt.Errorf("field %q is not supported; %s", field, supported(known))
	}
	value, err := unescapeFieldValue(term[opAt+opLen:], col(opAt+opLen))
	if err != nil {
		return fieldRequirement{}, fmt.Errorf("value for field %q: %w", field, err)
	}
	return fieldRequirement{field: field, value: strings.Trim(value, " \t\r\n"), not: not}, nil
}

func supported(known []string) string {
	if len(known) == 0 {
		return "no fields are supported"
	}
	return "supported: " + strings.Join(slices.Sorted(slices.Values(known)), ", ")
}

// unescapeFieldValue resolves the escapes of a value that starts at column
// col of the selector.
func unescapeFieldValue(v string, col int) (string, error) {
	if !strings.ContainsAny(v, `\=`) {
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\':
			if i+1 == len(v) {
				return "", fmt.Errorf(`'\' at column %d ends the selector; write \\ for a backslash`, col+i)
			}
			switch n := v[i+1]; n {
			case '\\', ',', '=':
				b.WriteByte(n)
				i++
			default:
				return "", fmt.Errorf(`invalid escape %q at column %d; only \\, \, and \= are allowed`, v[i:i+2], col+i)
			}
		case '=':
			return "", fmt.Errorf(`unescaped '=' at column %d; write \= for an '=' in a value`, col+i)
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// Empty reports whether the selector has no requirements and so selects
// everything.
func (s Fields) Empty() bool { return len(s.reqs) == 0 }

// Matches reports whether every requirement holds, reading fields with get.
// get is called only with fields the selector was parsed to support.
func (s Fields) Matches(get func(field string) string) bool {
	for _, r := range s.reqs {
		if (get(r.field) == r.value) == r.not {
			return false
		}
	}
	return true
}

// Value returns the value that an = (or ==) requirement demands of field,
// so that a server can narrow a query before matching, as with
// spec.nodeName=node-1. It reports false when no such requirement exists; if
// there are several, it returns the first.
func (s Fields) Value(field string) (string, bool) {
	for _, r := range s.reqs {
		if r.field == field && !r.not {
			return r.value, true
		}
	}
	return "", false
}

// String returns the selector in canonical form: requirements sorted by
// field, == written as =, no blanks, and '\', ',' and '=' in values escaped.
// ParseFields of it, with the same known fields, gives back an equal
// selector; the zero value gives "".
func (s Fields) String() string {
	var b strings.Builder
	for i, r := range s.reqs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(r.field)
		if r.not {
			b.WriteString("!=")
		} else {
			b.WriteByte('=')
		}
		b.WriteString(fieldEscaper.Replace(r.value))
	}
	return b.String()
}

var fieldEscaper = strings.NewReplacer(`\`, `\\`, `,`, `\,`, `=`, `\=`)
