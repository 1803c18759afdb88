package image

import (
	"fmt"
	"strings"
)

// maxNameLength is the longest repository name accepted, as in the OCI
// distribution reference grammar.
const maxNameLength = 255

// NormalizeRef validates an image name and returns its canonical form: a name
// without a tag or digest gets the tag "latest" ("hello" -> "hello:latest").
//
// The grammar is the one of Docker/OCI references: an optional registry host
// ("registry.local:5000/"), lowercase path components separated by "/" (each
// made of [a-z0-9] runs joined by ".", "_", "__" or dashes), an optional tag
// ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}) and an optional digest ("@sha256:<64 hex>").
// No registry or "library/" prefix is added: skiff has no registries yet.
func NormalizeRef(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidName)
	}
	rest, digest, hasDigest := strings.Cut(name, "@")
	if hasDigest {
		if err := checkDigest(digest); err != nil {
			return "", fmt.Errorf("%w %q: %w", ErrInvalidName, name, err)
		}
	}
	repo, tag := rest, ""
	if i := strings.LastIndexByte(rest, ':'); i > strings.LastIndexByte(rest, '/') {
		repo, tag = rest[:i], rest[i+1:]
		if err := checkTag(tag); err != nil {
			return "", fmt.Errorf("%w %q: %w", ErrInvalidName, name, err)
		}
	}
	if err := checkRepository(repo); err != nil {
		return "", fmt.Errorf("%w %q: %w", ErrInvalidName, name, err)
	}
	if tag == "" && !hasDigest {
		tag = "latest"
	}
	out := repo
	if tag != "" {
		out += ":" + tag
	}
	if hasDigest {
		out += "@" + digest
	}
	return out, nil
}

func checkRepository(repo string) error {
	if repo == "" {
		return fmt.Errorf("repository name is empty")
	}
	if len(repo) > maxNameLength {
		return fmt.Errorf("repository name is longer than %d characters", maxNameLength)
	}
	parts := strings.Split(repo, "/")
	if len(parts) > 1 && isDomain(parts[0]) {
		if err := checkDomain(parts[0]); err != nil {
			return err
		}
		parts = parts[1:]
	}
	for _, p := range parts {
		if err := checkPathComponent(p); err != nil {
			return err
		}
	}
	return nil
}

// isDomain reports whether the first component of a multi-component name is
// a registry host, as Docker decides it.
func isDomain(s string) bool {
	return strings.ContainsAny(s, ".:") || s == "localhost" || strings.ToLower(s) != s
}

func checkDomain(d string) error {
	host, port, hasPort := strings.Cut(d, ":")
	if hasPort {
		if port == "" || strings.Trim(port, "0123456789") != "" {
			return fmt.Errorf("registry host %q has an invalid port", d)
		}
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("registry host %q is invalid", d)
		}
		for _, c := range label {
			if !isAlnum(c) && !(c >= 'A' && c <= 'Z') && c != '-' {
				return fmt.Errorf("registry host %q has invalid character %q", d, c)
			}
		}
	}
	return nil
}

// checkPathComponent checks [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*.
func checkPathComponent(p string) error {
	if p == "" {
		return fmt.Errorf("repository name has an empty path component")
	}
	for _, c := range p {
		if c >= 'A' && c <= 'Z' {
			return fmt.Errorf("repository name must be lowercase")
		}
		if !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("repository name has invalid character %q (allowed: a-z 0-9 . _ - /)", c)
		}
	}
	if !isAlnum(rune(p[0])) || !isAlnum(rune(p[len(p)-1])) {
		return fmt.Errorf("repository path component %q must start and end with a letter or digit", p)
	}
	for i := 0; i < len(p); {
		if isAlnum(rune(p[i])) {
			i++
			continue
		}
		j := i
		for j < len(p) && !isAlnum(rune(p[j])) {
			j++
		}
		sep := p[i:j]
		if sep != "." && sep != "_" && sep != "__" && strings.Trim(sep, "-") != "" {
			return fmt.Errorf("repository path component %q has invalid separator %q", p, sep)
		}
		i = j
	}
	return nil
}

func checkTag(tag string) error {
	if tag == "" {
		return fmt.Errorf("tag is empty")
	}
	if len(tag) > 128 {
		return fmt.Errorf("tag is longer than 128 characters")
	}
	for i, c := range tag {
		word := isAlnum(c) || (c >= 'A' && c <= 'Z') || c == '_'
		if !word && (i == 0 || (c != '.' && c != '-')) {
			return fmt.Errorf("tag %q has invalid character %q (allowed: A-Z a-z 0-9 _ . -, not starting with . or -)", tag, c)
		}
	}
	return nil
}

func checkDigest(d string) error {
	hex, ok := strings.CutPrefix(d, "sha256:")
	if !ok || !isHex64(hex) {
		return fmt.Errorf("digest %q is not sha256:<64 lowercase hex digits>", d)
	}
	return nil
}

func isAlnum(c rune) bool { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') }

func isHex64(s string) bool { return len(s) == 64 && isHex(s) }

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9') && !(c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
