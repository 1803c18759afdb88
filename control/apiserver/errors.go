package apiserver

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"

	"skiff.dev/skiff/control/store"
)

// toConnect maps a store or validation error onto the Connect code a client
// can act on.
func toConnect(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, store.ErrAlreadyExists):
		return connect.NewError(connect.CodeAlreadyExists, err)
	case errors.Is(err, store.ErrConflict):
		return connect.NewError(connect.CodeAborted, err)
	case errors.Is(err, store.ErrExpired):
		return connect.NewError(connect.CodeOutOfRange, err)
	case errors.Is(err, store.ErrNotLeader):
		return connect.NewError(connect.CodeUnavailable, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	return connect.NewError(connect.CodeInternal, err)
}

// fieldErrors collects the problems found in one object, each naming the
// field by its manifest path (spec.containers[0].image).
type fieldErrors []string

func (fe *fieldErrors) add(path, format string, args ...any) {
	*fe = append(*fe, path+": "+fmt.Sprintf(format, args...))
}

// err returns an InvalidArgument error naming the object and every problem,
// or nil when there are none.
func (fe fieldErrors) err(kind, name string) error {
	if len(fe) == 0 {
		return nil
	}
	return connect.NewError(connect.CodeInvalidArgument,
		fmt.Errorf("%s %q is invalid: %s", kind, name, strings.Join(fe, "; ")))
}
