package pki

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

func TestNewToken(t *testing.T) {
	form := regexp.MustCompile(`^skiff-[a-z2-7]{40}$`)
	a, b := NewToken(), NewToken()
	for _, tok := range []string{a, b} {
		if !form.MatchString(tok) {
			t.Errorf("token %q is not skiff- and 40 lower case base32 characters", tok)
		}
		if err := CheckToken(tok); err != nil {
			t.Errorf("CheckToken(NewToken()) = %v", err)
		}
	}
	if a == b {
		t.Error("two new tokens are the same")
	}
}

func TestCheckToken(t *testing.T) {
	for _, tc := range []struct {
		name, token, want string
	}{
		{"empty", "", "it is empty"},
		{"short", "abc", "3 characters long, at least 16"},
		{"fifteen", strings.Repeat("x", 15), "at least 16"},
		{"sixteen", strings.Repeat("x", 16), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckToken(tc.token)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("CheckToken = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("CheckToken = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

func TestDerive(t *testing.T) {
	const tok = "skiff-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	a := Derive(tok, "p1", 32)
	if len(a) != 32 {
		t.Fatalf("len = %d, want 32", len(a))
	}
	for _, tc := range []struct {
		name  string
		other []byte
		same  bool
	}{
		{"same token and purpose", Derive(tok, "p1", 32), true},
		{"another purpose", Derive(tok, "p2", 32), false},
		{"another token", Derive(tok+"b", "p1", 32), false},
	} {
		if got := bytes.Equal(a, tc.other); got != tc.same {
			t.Errorf("%s: equal %v, want %v", tc.name, got, tc.same)
		}
	}
	if g := GossipKey(tok); len(g) != 32 || !bytes.Equal(g, Derive(tok, "skiff gossip key v1", 32)) || bytes.Equal(g, a) {
		t.Error(`GossipKey is not Derive(token, "skiff gossip key v1", 32)`)
	}
}
