package selector

import (
	"slices"
	"strings"
)

// Labels is a parsed label selector: a list of requirements that must all
// hold. The zero value selects everything.
type Labels struct {
	reqs []requirement // sorted by key, stable
}

// requirement is one comma-separated term of a label selector.
type requirement struct {
	key    string
	op     labelOp
	values []string // sorted and distinct; one for opEquals and opNotEquals, none for the existence ops
}

type labelOp int

const (
	opEquals    labelOp = iota // key=value or key==value
	opNotEquals                // key!=value
	opIn                       // key in (v1,v2)
	opNotIn                    // key notin (v1,v2)
	opExists                   // key
	opNotExists                // !key
)

// Empty reports whether the selector has no requirements and so selects
// everything.
func (s Labels) Empty() bool { return len(s.reqs) == 0 }

// Matches reports whether labels satisfy every requirement. As in Kubernetes,
// = and in need the label to be present, while != and notin also hold when it
// is absent.
func (s Labels) Matches(labels map[string]string) bool {
	for _, r := range s.reqs {
		if !r.matches(labels) {
			return false
		}
	}
	return true
}

func (r requirement) matches(labels map[string]string) bool {
	v, ok := labels[r.key]
	switch r.op {
	case opEquals, opIn:
		return ok && slices.Contains(r.values, v)
	case opNotEquals, opNotIn:
		return !ok || !slices.Contains(r.values, v)
	case opExists:
		return ok
	case opNotExists:
		return !ok
	}
	return false
}

// String returns the selector in canonical form: requirements sorted by key,
// == written as =, set values sorted and distinct, no spaces but around in
// and notin. ParseLabels of it gives back an equal selector; the zero value
// gives "".
func (s Labels) String() string {
	var b strings.Builder
	for i, r := range s.reqs {
		if i > 0 {
			b.WriteByte(',')
		}
		r.write(&b)
	}
	return b.String()
}

func (r requirement) write(b *strings.Builder) {
	switch r.op {
	case opEquals:
		b.WriteString(r.key + "=" + r.values[0])
	case opNotEquals:
		b.WriteString(r.key + "!=" + r.values[0])
	case opIn:
		b.WriteString(r.key + " in (" + strings.Join(r.values, ",") + ")")
	case opNotIn:
		b.WriteString(r.key + " notin (" + strings.Join(r.values, ",") + ")")
	case opExists:
		b.WriteString(r.key)
	case opNotExists:
		b.WriteString("!" + r.key)
	}
}
