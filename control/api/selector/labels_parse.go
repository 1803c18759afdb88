package selector

import (
	"fmt"
	"slices"
	"strings"
)

// ParseLabels parses a label selector in Kubernetes' syntax: comma-separated
// requirements, each one of
//
//	key=value  key==value  key!=value
//	key in (v1,v2)  key notin (v1,v2)
//	key  !key
//
// with spaces, tabs and newlines allowed between tokens. Keys must be
// qualified names and values valid label values (see ValidateQualifiedName
// and ValidateLabelValue); a value may be empty (key=, key in (a,)). An empty
// or blank string selects everything. "in" and "notin" are operators only
// after a key, so they may also be used as keys and values.
//
// An error starts with `invalid label selector "s": ` and says what is wrong
// and where.
func ParseLabels(s string) (Labels, error) {
	p := &labelParser{src: s, toks: lex(s)}
	reqs, err := p.parse()
	if err != nil {
		return Labels{}, err
	}
	slices.SortStableFunc(reqs, func(a, b requirement) int { return strings.Compare(a.key, b.key) })
	return Labels{reqs: reqs}, nil
}

type tokenKind int

const (
	tokEnd         tokenKind = iota
	tokIdent                 // any run of characters that are not blanks or punctuation
	tokEq                    // =
	tokDoubleEq              // ==
	tokNotEq                 // !=
	tokNot                   // !
	tokOpen                  // (
	tokClose                 // )
	tokComma                 // ,
	tokUnsupported           // < or >, Kubernetes' lt and gt, which skiff does not support
)

type token struct {
	kind tokenKind
	text string
	pos  int // byte offset in the selector
}

// quoted describes the token for an error message.
func (t token) quoted() string {
	if t.kind == tokEnd {
		return "the end"
	}
	return fmt.Sprintf("%q", t.text)
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func isPunct(c byte) bool { return punctKind(c) != tokIdent }

// punctKind is the kind of the one-character token c, or tokIdent when c
// can be part of an identifier.
func punctKind(c byte) tokenKind {
	switch c {
	case '=':
		return tokEq
	case '!':
		return tokNot
	case '(':
		return tokOpen
	case ')':
		return tokClose
	case ',':
		return tokComma
	case '<', '>':
		return tokUnsupported
	}
	return tokIdent
}

// lex splits s into tokens. It never fails: characters that cannot start a
// token make identifiers, which the parser then rejects as keys or values.
func lex(s string) []token {
	var toks []token
	for i := 0; i < len(s); {
		c := s[i]
		start := i
		switch {
		case isBlank(c):
			i++
			continue
		case c == '=' && strings.HasPrefix(s[i:], "=="):
			toks = append(toks, token{tokDoubleEq, "==", start})
			i += 2
		case c == '!' && strings.HasPrefix(s[i:], "!="):
			toks = append(toks, token{tokNotEq, "!=", start})
			i += 2
		case isPunct(c):
			toks = append(toks, token{punctKind(c), s[i : i+1], start})
			i++
		default:
			for i < len(s) && !isBlank(s[i]) && !isPunct(s[i]) {
				i++
			}
			toks = append(toks, token{tokIdent, s[start:i], start})
		}
	}
	return append(toks, token{tokEnd, "", len(s)})
}

type labelParser struct {
	src  string
	toks []token
	next int
}

func (p *labelParser) peek() token { return p.toks[p.next] }

func (p *labelParser) take() token {
	t := p.toks[p.next]
	if t.kind != tokEnd {
		p.next++
	}
	return t
}

func (p *labelParser) errorf(format string, args ...any) error {
	return fmt.Errorf("invalid label selector %q: "+format, append([]any{p.src}, args...)...)
}

// unexpected reports found where want was expected, after the token or
// phrase after. When the selector ended, it says what is missing instead.
func (p *labelParser) unexpected(found token, after, want, missing string) error {
	if found.kind == tokEnd {
		return p.errorf("missing %s after %s", missing, after)
	}
	return p.errorf("unexpected %s at column %d after %s; want %s", found.quoted(), found.pos+1, after, want)
}

func (p *labelParser) parse() ([]requirement, error) {
	if p.peek().kind == tokEnd {
		return nil, nil
	}
	var reqs []requirement
	for {
		r, err := p.requirement()
		if err != nil {
			return nil, err
		}
		reqs = append(reqs, r)
		last := p.toks[p.next-1]
		switch t := p.take(); t.kind {
		case tokEnd:
			return reqs, nil
		case tokComma:
			if p.peek().kind == tokEnd {
				return nil, p.errorf("missing requirement after ',' at column %d", t.pos+1)
			}
		default:
			return nil, p.unexpected(t, last.quoted(), "',' or the end", "")
		}
	}
}

// requirement parses one requirement, leaving the ',' or end after it.
func (p *labelParser) requirement() (requirement, error) {
	t := p.take()
	switch t.kind {
	case tokIdent:
		return p.afterKey(t)
	case tokNot:
		k := p.take()
		if k.kind != tokIdent {
			return requirement{}, p.unexpected(k, `"!"`, "a key", "key")
		}
		key, err := p.key(k)
		if err != nil {
			return requirement{}, err
		}
		if n := p.peek(); n.kind != tokEnd && n.kind != tokComma {
			return requirement{}, p.errorf("unexpected %s at column %d after \"!%s\"; a does-not-exist requirement takes no operator or value", n.quoted(), n.pos+1, key)
		}
		return requirement{key: key, op: opNotExists}, nil
	case tokComma:
		return requirement{}, p.errorf("missing requirement before ',' at column %d", t.pos+1)
	case tokEq, tokDoubleEq, tokNotEq:
		return requirement{}, p.errorf("missing key before %q at column %d", t.text, t.pos+1)
	default:
		return requirement{}, p.errorf("unexpected %s at column %d; want a key or '!'", t.quoted(), t.pos+1)
	}
}

// afterKey parses what follows the key k of a requirement.
func (p *labelParser) afterKey(k token) (requirement, error) {
	key, err := p.key(k)
	if err != nil {
		return requirement{}, err
	}
	r := requirement{key: key}
	op := p.peek()
	switch {
	case op.kind == tokEnd || op.kind == tokComma:
		r.op = opExists
		return r, nil
	case op.kind == tokEq || op.kind == tokDoubleEq:
		r.op = opEquals
	case op.kind == tokNotEq:
		r.op = opNotEquals
	case op.kind == tokIdent && op.text == "in":
		r.op = opIn
	case op.kind == tokIdent && op.text == "notin":
		r.op = opNotIn
	case op.kind == tokUnsupported:
		return requirement{}, p.errorf("unsupported operator %q at column %d; want =, ==, !=, in or notin", op.text, op.pos+1)
	default:
		return requirement{}, p.unexpected(op, fmt.Sprintf("key %q", key), "an operator (=, ==, !=, in, notin), ',' or the end", "")
	}
	p.take()
	if r.op == opIn || r.op == opNotIn {
		r.values, err = p.valueSet(key, op)
		return r, err
	}
	v := ""
	switch t := p.peek(); t.kind {
	case tokEnd, tokComma:
		// An empty value: key= selects labels whose value is "".
	case tokIdent:
		p.take()
		if v, err = p.value(key, t); err != nil {
			return requirement{}, err
		}
	default:
		return requirement{}, p.unexpected(t, op.quoted(), "a value, ',' or the end", "")
	}
	r.values = []string{v}
	return r, nil
}

// valueSet parses the parenthesised values after in or notin. As in
// Kubernetes, an item may be empty: "()" is the set holding "".
func (p *labelParser) valueSet(key string, op token) ([]string, error) {
	if t := p.take(); t.kind != tokOpen {
		return nil, p.unexpected(t, op.quoted(), "'('", "'(' and a list of values")
	}
	var values []string
	for {
		v := ""
		if t := p.peek(); t.kind == tokIdent {
			p.take()
			var err error
			if v, err = p.value(key, t); err != nil {
				return nil, err
			}
		}
		values = append(values, v)
		last := p.toks[p.next-1]
		switch t := p.take(); t.kind {
		case tokComma:
		case tokClose:
			slices.Sort(values)
			return slices.Compact(values), nil
		default:
			return nil, p.unexpected(t, last.quoted(), "',' or ')'", "')'")
		}
	}
}

func (p *labelParser) key(t token) (string, error) {
	if problems := ValidateQualifiedName(t.text); len(problems) > 0 {
		return "", p.errorf("invalid key %q at column %d: %s", t.text, t.pos+1, strings.Join(problems, "; "))
	}
	return t.text, nil
}

func (p *labelParser) value(key string, t token) (string, error) {
	if problems := ValidateLabelValue(t.text); len(problems) > 0 {
		return "", p.errorf("invalid value %q for key %q at column %d: %s", t.text, key, t.pos+1, strings.Join(problems, "; "))
	}
	return t.text, nil
}
