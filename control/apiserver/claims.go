package apiserver

// This file holds what an object claims beyond its own key: a service's
// cluster IP and node ports, a node's pod CIDR. Each claimed value is a
// store key (under claimPrefix) created in the same Txn as the object's
// write, with a guard that it does not exist yet, and deleted in the same
// Txn as the object's removal (ARCHITECTURE.md rule 9). So two creates
// racing for one address, on one server or across a leader change, cannot
// both win: the loser's guard fails, and it picks another address.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"connectrpc.com/connect"

	"skiff.dev/skiff/control/api/kinds"
	"skiff.dev/skiff/control/store"
)

// claimPrefix is where claims live, apart from every kind's objects.
const claimPrefix = "/claims/"

// maxClaimRetries bounds how often a write picks another value after
// losing one to a concurrent write.
const maxClaimRetries = 16

// claim is one value an object holds: its store key, and the field and
// value a user reads about when someone else holds it.
type claim struct {
	key   string
	field string
	value string
}

// claimer is what a kind that claims values adds to its strategy.
type claimer struct {
	// fill sets obj's server-allocated fields that are empty (old is the
	// stored object on update, nil on create; what old holds is kept),
	// picking values whose keys used does not report, and checks the
	// values a user chose (in range). It returns the keys it picked. With
	// dryRun it picks nothing and checks only.
	fill func(ctx context.Context, old, obj kinds.Object, dryRun bool, used usedFunc) (picked []string, err error)
	// keys lists the claims obj holds.
	keys func(obj kinds.Object) []claim
}

// usedFunc returns the names under one claim prefix (the key less the
// prefix) that are taken, as far as this server knows: a pick among the
// others may still lose a race, which the Txn's guard catches.
type usedFunc func(ctx context.Context, prefix string) (map[string]bool, error)

// lostClaimError is a claim the server picked that another write took
// first: pick again.
type lostClaimError struct{ key string }

func (e *lostClaimError) Error() string { return "claim " + e.key + " was taken concurrently" }

// owner is the value of obj's claim keys: which object holds them.
func owner(k *kinds.Kind, obj kinds.Object) []byte {
	m := obj.GetMetadata()
	return []byte(k.Plural + "/" + k.ID(m.GetNamespace(), m.GetName()) + "/" + m.GetUid())
}

// claims returns the ops and rules that make obj's claims true in the Txn
// that writes it over old (nil on create): a create of each new claim key,
// guarded to be absent, and a delete of each key old held and obj does not.
// lost names keys picked earlier that lost a race. A dry run picks nothing
// and returns only the rules of the user's own choices, to check.
func (b *backend) claims(ctx context.Context, k *kinds.Kind, old, obj kinds.Object, dryRun bool, lost map[string]bool) ([]store.Op, []rule, error) {
	c := b.strategy(k).claimer
	if c == nil {
		return nil, nil, nil
	}
	used := func(ctx context.Context, prefix string) (map[string]bool, error) {
		kvs, _, err := b.store.List(ctx, prefix)
		if err != nil {
			return nil, toConnect(fmt.Errorf("list %s: %w", prefix, err))
		}
		out := make(map[string]bool, len(kvs)+len(lost))
		for _, kv := range kvs {
			out[strings.TrimPrefix(kv.Key, prefix)] = true
		}
		for key := range lost {
			if name, ok := strings.CutPrefix(key, prefix); ok {
				out[name] = true
			}
		}
		return out, nil
	}
	pickedList, err := c.fill(ctx, old, obj, dryRun, used)
	if err != nil {
		return nil, nil, err
	}
	picked := map[string]bool{}
	for _, key := range pickedList {
		picked[key] = true
	}
	had := map[string]bool{}
	if old != nil {
		for _, cl := range c.keys(old) {
			had[cl.key] = true
		}
	}
	var (
		ops   []store.Op
		rules []rule
		holds = map[string]bool{}
		val   = owner(k, obj)
		name  = obj.GetMetadata().GetName()
	)
	for _, cl := range c.keys(obj) {
		if holds[cl.key] {
			continue // one key for two fields (a node port for TCP and UDP)
		}
		holds[cl.key] = true
		if had[cl.key] {
			continue
		}
		r := rule{guard: store.IfAbsent(cl.key)}
		if picked[cl.key] {
			r.err = &lostClaimError{key: cl.key}
		} else {
			r.err = connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("%s %q is invalid: %s: invalid value %q: already allocated", k.Singular, name, cl.field, cl.value))
		}
		rules = append(rules, r)
		ops = append(ops, store.CreateOp(cl.key, val))
	}
	if dryRun {
		return nil, rules, nil
	}
	if old != nil {
		var gone []claim
		for _, cl := range c.keys(old) {
			if !holds[cl.key] {
				gone = append(gone, cl)
			}
		}
		rel, err := b.releaseKeys(ctx, k, old, gone)
		if err != nil {
			return nil, nil, err
		}
		ops = append(ops, rel...)
	}
	return ops, rules, nil
}

// release returns the ops that free obj's claims as it is removed.
func (b *backend) release(ctx context.Context, k *kinds.Kind, obj kinds.Object) ([]store.Op, error) {
	c := b.strategy(k).claimer
	if c == nil {
		return nil, nil
	}
	return b.releaseKeys(ctx, k, obj, c.keys(obj))
}

// releaseKeys deletes the claim keys that obj holds: each at the revision
// read, so a Txn that races with another change of the key fails as a
// conflict. A key that is absent, or held by another object (written
// before claims existed), is left alone.
func (b *backend) releaseKeys(ctx context.Context, k *kinds.Kind, obj kinds.Object, cls []claim) ([]store.Op, error) {
	var ops []store.Op
	want := string(owner(k, obj))
	seen := map[string]bool{}
	for _, cl := range cls {
		if seen[cl.key] {
			continue
		}
		seen[cl.key] = true
		kv, err := b.store.Get(ctx, cl.key)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, toConnect(fmt.Errorf("read claim %s: %w", cl.key, err))
		}
		if string(kv.Value) == want {
			ops = append(ops, store.DeleteOp(cl.key, kv.ModRevision))
		}
	}
	return ops, nil
}

// writeClaiming stores obj over old at the version rev, under rules, with
// the claims obj holds and old does not (lost: picked earlier and taken).
func (b *backend) writeClaiming(ctx context.Context, k *kinds.Kind, old, obj kinds.Object, rev uint64, rules []rule, lost map[string]bool) (kinds.Object, error) {
	cops, crules, err := b.claims(ctx, k, old, obj, false, lost)
	if err != nil {
		return nil, err
	}
	return b.write(ctx, k, obj, rev, append(slices.Clip(rules), crules...), cops...)
}

// retryClaims looks at the error of a write's try-th attempt: when a
// value the write picked was claimed first by a concurrent write (lost
// records it), the write is tried again with other picks, up to
// maxClaimRetries times, and then answered Unavailable. Any other error,
// or none, is returned as it is.
func retryClaims(err error, lost map[string]bool, try int, verb string, k *kinds.Kind, id string) (bool, error) {
	lk, ok := lostClaim(err)
	if !ok {
		return false, err
	}
	if lost[lk] = true; try < maxClaimRetries {
		return true, nil
	}
	return false, connect.NewError(connect.CodeUnavailable, fmt.Errorf("%s %s %q: %d addresses picked were taken by concurrent writes; try again", verb, k.Singular, id, len(lost)))
}

// lostClaim reports the key of a claim that err says was taken first.
func lostClaim(err error) (string, bool) {
	var lc *lostClaimError
	if errors.As(err, &lc) {
		return lc.key, true
	}
	return "", false
}
