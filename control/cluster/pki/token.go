package pki

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
)

// tokenPrefix starts every token NewToken makes, so one is recognised in a
// config file or a leak scanner.
const tokenPrefix = "skiff-"

// minTokenLen is the shortest token CheckToken accepts.
const minTokenLen = 16

// NewToken returns a new random join token: "skiff-" and 40 lower case
// base32 characters (200 random bits).
func NewToken() string {
	b := make([]byte, 25)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return tokenPrefix + strings.ToLower(base32.StdEncoding.EncodeToString(b))
}

// CheckToken refuses a join token that is empty or shorter than 16
// characters.
func CheckToken(token string) error {
	if token == "" {
		return errors.New("check join token: it is empty")
	}
	if len(token) < minTokenLen {
		return fmt.Errorf("check join token: it is %d characters long, at least %d are needed", len(token), minTokenLen)
	}
	return nil
}

// Derive derives n bytes for purpose from a token with HKDF-SHA256 (the
// token as secret, no salt, purpose as info): the same token and purpose
// always give the same bytes, different purposes unrelated ones. n must be
// in 1..8160; Derive panics otherwise, a programming error.
func Derive(token, purpose string, n int) []byte {
	b, err := hkdf.Key(sha256.New, []byte(token), nil, purpose, n)
	if err != nil {
		panic(fmt.Sprintf("pki.Derive(%q, %d): %v", purpose, n, err))
	}
	return b
}

// GossipKey is the gossip pool's encryption key: 32 bytes derived from the
// token.
func GossipKey(token string) []byte { return Derive(token, "skiff gossip key v1", 32) }
