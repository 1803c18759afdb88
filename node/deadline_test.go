package node

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
)

// TestWithDeadline: a call without a deadline gets the default one; a call
// with its own keeps it.
func TestWithDeadline(t *testing.T) {
	var got time.Time
	var had bool
	invoker := func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
		got, had = ctx.Deadline()
		return nil
	}
	i := withDeadline(time.Minute)
	before := time.Now()
	if err := i(context.Background(), "/m", nil, nil, nil, invoker); err != nil {
		t.Fatal(err)
	}
	if !had || got.Before(before.Add(time.Minute)) || got.After(time.Now().Add(time.Minute)) {
		t.Errorf("a call without a deadline got %v (%v), want one a minute away", got, had)
	}
	own := time.Now().Add(time.Second)
	ctx, cancel := context.WithDeadline(context.Background(), own)
	defer cancel()
	if err := i(ctx, "/m", nil, nil, nil, invoker); err != nil {
		t.Fatal(err)
	}
	if !got.Equal(own) {
		t.Errorf("a call with its own deadline got %v, want %v", got, own)
	}
}
