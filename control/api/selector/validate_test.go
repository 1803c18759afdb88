package selector

import (
	"slices"
	"strings"
	"testing"
)

func TestValidateQualifiedName(t *testing.T) {
	name63 := strings.Repeat("n", 63)
	prefix253 := strings.Repeat(strings.Repeat("p", 62)+".", 4) + "p" // 4*63 + 1
	tests := []struct {
		name, in string
		want     []string
	}{
		{"simple", "app", nil},
		{"single character", "a", nil},
		{"inner punctuation", "a-b_c.d", nil},
		{"uppercase and digits", "App9", nil},
		{"prefixed", "skiff.dev/finalizer", nil},
		{"63-character name", name63, nil},
		{"253-character prefix", prefix253 + "/a", nil},
		{"empty", "", []string{"name part must be non-empty"}},
		{"64-character name", name63 + "n", []string{"name part must be no more than 63 characters"}},
		{"starts with dash", "-a", []string{"name part " + nameCharsMsg}},
		{"ends with dot", "a.", []string{"name part " + nameCharsMsg}},
		{"blank inside", "a b", []string{"name part " + nameCharsMsg}},
		{"non-ASCII", "café", []string{"name part " + nameCharsMsg}},
		{"long and bad", "-" + name63, []string{"name part must be no more than 63 characters", "name part " + nameCharsMsg}},
		{"empty prefix", "/a", []string{"prefix part must be non-empty"}},
		{"empty name after prefix", "skiff.dev/", []string{"name part must be non-empty"}},
		{"254-character prefix", "p" + prefix253 + "/a", []string{"prefix part must be no more than 253 characters"}},
		{"uppercase prefix", "Skiff.dev/a", []string{prefixMsg}},
		{"underscore in prefix", "skiff_dev/a", []string{prefixMsg}},
		{"empty prefix label", "skiff..dev/a", []string{prefixMsg}},
		{"prefix label ends with dash", "skiff-.dev/a", []string{prefixMsg}},
		{"bad prefix and name", "Skiff/-a", []string{prefixMsg, "name part " + nameCharsMsg}},
		{"two slashes", "a/b/c", []string{qualifiedMsg}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidateQualifiedName(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("ValidateQualifiedName(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestValidateLabelValue(t *testing.T) {
	long := strings.Repeat("v", 63)
	tests := []struct {
		name, in string
		want     []string
	}{
		{"empty", "", nil},
		{"simple", "web", nil},
		{"inner punctuation", "v1.2-rc_3", nil},
		{"63 characters", long, nil},
		{"64 characters", long + "v", []string{"must be no more than 63 characters"}},
		{"starts with underscore", "_a", []string{valueMsg}},
		{"slash", "a/b", []string{valueMsg}},
		{"long and bad", long + "-", []string{"must be no more than 63 characters", valueMsg}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidateLabelValue(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("ValidateLabelValue(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
