// Package quantity reads Kubernetes quantities ("500m", "2", "64Mi",
// "1G"): the one parser of resources in manifests, of the node's limits in
// flags, and of the agent's mapping to CRI. Exponents ("1e3") are not
// accepted.
package quantity

import (
	"errors"
	"math/big"
	"regexp"
)

var pattern = regexp.MustCompile(`^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$`)

var suffixes = map[string]*big.Rat{
	"": big.NewRat(1, 1), "m": big.NewRat(1, 1000),
	"k": big.NewRat(1e3, 1), "M": big.NewRat(1e6, 1), "G": big.NewRat(1e9, 1),
	"T": big.NewRat(1e12, 1), "P": big.NewRat(1e15, 1), "E": big.NewRat(1e18, 1),
	"Ki": big.NewRat(1<<10, 1), "Mi": big.NewRat(1<<20, 1), "Gi": big.NewRat(1<<30, 1),
	"Ti": big.NewRat(1<<40, 1), "Pi": big.NewRat(1<<50, 1), "Ei": big.NewRat(1<<60, 1),
}

// ErrSyntax and ErrTooLarge say why Parse refused a quantity.
var (
	ErrSyntax   = errors.New(`must be a quantity such as "500m", "2", "64Mi" or "1G"`)
	ErrTooLarge = errors.New("too large: at most 2^62")
)

// Parse reads s as an exact number: zero and up to 2^62.
func Parse(s string) (*big.Rat, error) {
	m := pattern.FindStringSubmatch(s)
	if m == nil {
		return nil, ErrSyntax
	}
	n, ok := new(big.Rat).SetString(m[1])
	if !ok {
		return nil, ErrSyntax
	}
	n.Mul(n, suffixes[m[2]])
	if n.Cmp(new(big.Rat).SetInt64(1<<62)) > 0 {
		return nil, ErrTooLarge
	}
	return n, nil
}

// Ceil rounds q up to an integer.
func Ceil(q *big.Rat) int64 {
	n := new(big.Int).Quo(q.Num(), q.Denom())
	if new(big.Rat).SetInt(n).Cmp(q) < 0 {
		n.Add(n, big.NewInt(1))
	}
	return n.Int64()
}

// Bytes reads s as a positive number of bytes, rounded up ("64Mi", "1G").
func Bytes(s string) (int64, error) {
	q, err := Parse(s)
	if err != nil {
		return 0, err
	}
	if q.Sign() <= 0 {
		return 0, errors.New("must be more than zero")
	}
	return Ceil(q), nil
}
