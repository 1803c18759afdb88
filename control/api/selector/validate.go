package selector

import "strings"

const (
	maxNameLen   = 63
	maxPrefixLen = 253
)

const (
	nameCharsMsg = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
	valueMsg     = "a valid label value must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
	prefixMsg    = "prefix part must be a lowercase RFC 1123 subdomain: lowercase alphanumeric characters, '-' or '.', each dot-separated part starting and ending with an alphanumeric character (e.g. 'example.com')"
	qualifiedMsg = "a qualified name must be a name with an optional DNS subdomain prefix and '/' (e.g. 'my-name' or 'example.com/my-name')"
)

// ValidateQualifiedName returns what is wrong with s as a qualified name, the
// form of label keys, annotation keys and finalizer names: an optional prefix
// that is a DNS-1123 subdomain of at most 253 characters followed by '/', then
// a name of 1 to 63 alphanumeric characters, '-', '_' or '.' that starts and
// ends with an alphanumeric character. It returns nil when s is valid.
func ValidateQualifiedName(s string) []string {
	var problems []string
	name := s
	if prefix, rest, ok := strings.Cut(s, "/"); ok {
		if strings.Contains(rest, "/") {
			return []string{qualifiedMsg}
		}
		name = rest
		switch {
		case prefix == "":
			problems = append(problems, "prefix part must be non-empty")
		case len(prefix) > maxPrefixLen:
			problems = append(problems, "prefix part must be no more than 253 characters")
		}
		if prefix != "" && !isSubdomain(prefix) {
			problems = append(problems, prefixMsg)
		}
	}
	if name == "" {
		return append(problems, "name part must be non-empty")
	}
	if len(name) > maxNameLen {
		problems = append(problems, "name part must be no more than 63 characters")
	}
	if !isName(name) {
		problems = append(problems, "name part "+nameCharsMsg)
	}
	return problems
}

// ValidateLabelValue returns what is wrong with s as a label value: at most
// 63 alphanumeric characters, '-', '_' or '.', starting and ending with an
// alphanumeric character, or empty. It returns nil when s is valid.
func ValidateLabelValue(s string) []string {
	if s == "" {
		return nil
	}
	var problems []string
	if len(s) > maxNameLen {
		problems = append(problems, "must be no more than 63 characters")
	}
	if !isName(s) {
		problems = append(problems, valueMsg)
	}
	return problems
}

// isName reports whether s is non-empty, made of [-A-Za-z0-9_.] and starts
// and ends with [A-Za-z0-9]. Length is checked by the caller.
func isName(s string) bool {
	if s == "" || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// isSubdomain reports whether s is dot-separated parts, each made of
// [-a-z0-9] and starting and ending with [a-z0-9]. Length is checked by the
// caller.
func isSubdomain(s string) bool {
	for part := range strings.SplitSeq(s, ".") {
		if part == "" || !isLowerAlnum(part[0]) || !isLowerAlnum(part[len(part)-1]) {
			return false
		}
		for i := 0; i < len(part); i++ {
			if c := part[i]; !isLowerAlnum(c) && c != '-' {
				return false
			}
		}
	}
	return true
}

func isLowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

func isAlnum(c byte) bool { return isLowerAlnum(c) || 'A' <= c && c <= 'Z' }
