package main

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	"skiff.dev/skiff/control/api/kinds"
)

// errUnchanged is what an edit returns when the object already is as asked:
// nothing is written.
var errUnchanged = errors.New("unchanged")

// editObject gets an object, lets edit change it and writes it back, as
// kubectl's label, taint and cordon patch one: when another writer got
// there first (the update is refused as a conflict), it gets the object
// again and edits afresh, a few times. It reports whether it wrote.
func editObject(ctx context.Context, c *clients, k *kinds.Kind, ns, name string, edit func(kinds.Object) error) (bool, error) {
	const tries = 5
	for try := 1; ; try++ {
		obj, err := c.of(k).Get(ctx, ns, name)
		if err != nil {
			return false, plain(err)
		}
		if err := edit(obj); errors.Is(err, errUnchanged) {
			return false, nil
		} else if err != nil {
			return false, err
		}
		_, err = c.of(k).Update(ctx, obj, false)
		if connect.CodeOf(err) == connect.CodeAborted && try < tries {
			continue
		}
		if err != nil {
			return false, plain(err)
		}
		return true, nil
	}
}
