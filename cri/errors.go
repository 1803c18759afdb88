package cri

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"skiff.dev/skiff/netns"
	skiffrt "skiff.dev/skiff/runtime"
	"skiff.dev/skiff/runtime/image"
	"skiff.dev/skiff/runtime/image/layer"
)

// Sentinel errors. Handlers wrap them ("verb object: %w"); toStatus maps them
// to gRPC codes at the edge.
var (
	errNotFound           = errors.New("not found")
	errAlreadyExists      = errors.New("already exists")
	errInvalidArgument    = errors.New("invalid argument")
	errFailedPrecondition = errors.New("failed precondition")
	errUnavailable        = errors.New("unavailable")
	errUnimplemented      = errors.New("not supported")
)

// codeOf classifies err. Errors of the runtime, image store and netns
// packages are classified here too, so handlers need not translate them.
func codeOf(err error) codes.Code {
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	switch {
	case errors.Is(err, errNotFound), errors.Is(err, image.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, errAlreadyExists), errors.Is(err, netns.ErrExist):
		return codes.AlreadyExists
	case errors.Is(err, image.ErrUnauthorized):
		return codes.PermissionDenied
	case errors.Is(err, image.ErrNotWasm), errors.Is(err, image.ErrDigestMismatch), errors.Is(err, image.ErrTooLarge),
		errors.Is(err, image.ErrUnsupported), errors.Is(err, image.ErrInvalidArchive), errors.Is(err, layer.ErrRefused), errors.Is(err, layer.ErrTooLarge):
		return codes.FailedPrecondition
	case errors.Is(err, errInvalidArgument), errors.Is(err, image.ErrInvalidName),
		errors.Is(err, skiffrt.ErrInvalidImage), errors.Is(err, skiffrt.ErrInvalidSpec):
		return codes.InvalidArgument
	case errors.Is(err, errFailedPrecondition), errors.Is(err, skiffrt.ErrState), errors.Is(err, netns.ErrNotReady):
		return codes.FailedPrecondition
	case errors.Is(err, errUnimplemented), errors.Is(err, skiffrt.ErrUnsupported):
		return codes.Unimplemented
	case errors.Is(err, errUnavailable), errors.Is(err, skiffrt.ErrClosed):
		return codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	return codes.Unknown
}

// toStatus turns a handler's error into a gRPC status error carrying the
// full message.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codeOf(err), err.Error())
}
