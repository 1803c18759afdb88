package node

import (
	"context"
	"time"

	"google.golang.org/grpc"
)

// runtimeRequestTimeout bounds every CRI call the agent makes that has no
// deadline of its own, as the kubelet's --runtime-request-timeout (2
// minutes): a module whose start never returns cannot hold a pod worker
// forever. (GetContainerEvents is a stream, and lives as long as the agent.)
const runtimeRequestTimeout = 2 * time.Minute

// withDeadline gives a unary call the default deadline when it has none.
func withDeadline(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}
