package node

import (
	"context"
	"net"

	"skiff.dev/skiff/netns"
)

// podDialer dials from inside pods' network namespaces, for the agent's
// probes (agent.PodDialer). The socket is made on a thread inside the
// namespace and stays there; the connection is then used from anywhere.
// Addresses are IP literals (the apiserver refuses probe hosts that are
// names), so the dial does not resolve names or race families on other
// goroutines, which would leave the namespace.
type podDialer struct{}

func (podDialer) DialContext(ctx context.Context, netnsPath, network, address string) (net.Conn, error) {
	if netnsPath == "" {
		var d net.Dialer
		return d.DialContext(ctx, network, address) // a host-network pod
	}
	var conn net.Conn
	err := netns.Do(netnsPath, func() error {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, address)
		conn = c
		return err
	})
	return conn, err
}
