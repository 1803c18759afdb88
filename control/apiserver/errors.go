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
	case errors.Is(err, store.ErrOutcomeUnknown):
		// First: it may also wrap a context error, and must never read as
		// "did not happen" (Canceled, NotFound, Conflict) or as Internal.
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%w; %s", err, outcomeUnknownHint))
	case errors.Is(err, store.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, store.ErrAlreadyExists):
		return connect.NewError(connect.CodeAlreadyExists, err)
	case errors.Is(err, store.ErrConflict):
		return connect.NewError(connect.CodeAborted, err)
	case errors.Is(err, store.ErrExpired), errors.Is(err, store.ErrFutureRevision):
		return connect.NewError(connect.CodeOutOfRange, err)
	case errors.Is(err, store.ErrNotLeader), errors.Is(err, store.ErrClosed):
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

// outcomeUnknownHint tells a client what to do about a write whose outcome
// is unknown.
const outcomeUnknownHint = "get the object to see whether it happened"

// objectErr turns a store error about one object into what a user should
// read: "pod \"default/hello\" not found" rather than the store's key.
func objectErr(verb, kind, id string, err error) error {
	var oe *store.OutcomeUnknownError
	switch {
	case errors.As(err, &oe):
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf(
			"%s %s %q: %w: the write was proposed but its result was lost (%v); %s",
			verb, kind, id, store.ErrOutcomeUnknown, oe.Err, outcomeUnknownHint))
	case errors.Is(err, store.ErrOutcomeUnknown):
		return toConnect(fmt.Errorf("%s %s %q: %w", verb, kind, id, err))
	case errors.Is(err, store.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("%s %q not found", kind, id))
	case errors.Is(err, store.ErrAlreadyExists):
		return connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("%s %q already exists", kind, id))
	case errors.Is(err, store.ErrConflict):
		return connect.NewError(connect.CodeAborted, fmt.Errorf("%s %s %q: the object has been modified; get it and try again", verb, kind, id))
	}
	return toConnect(fmt.Errorf("%s %s %q: %w", verb, kind, id, err))
}
