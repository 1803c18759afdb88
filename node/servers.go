package node

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"skiff.dev/skiff/control/cluster"
)

// poolHost is the host the node's API clients are given when the node
// finds its servers through the gossip pool; serverClient replaces it with
// a live server's address on every request.
const poolHost = "skiff-servers"

// serverClient sends each request to a live server of the pool: the one it
// used last while that one stays alive, else another, so that the node
// moves to any live server when its server dies.
type serverClient struct {
	pool *cluster.Pool
	hc   *http.Client

	mu      sync.Mutex
	current string               // API address of the server in use; "" before the first
	failed  map[string]time.Time // when a request to a server last failed
}

// avoidFor is how long a server a request failed to reach is passed over
// while another live one is known: the pool may take seconds to see it die.
const avoidFor = 10 * time.Second

// Do sends req to a live server.
func (c *serverClient) Do(req *http.Request) (*http.Response, error) {
	addr, err := c.server()
	if err != nil {
		return nil, err
	}
	req = req.Clone(req.Context())
	req.URL.Host, req.Host = addr, addr
	res, err := c.hc.Do(req)
	if err != nil {
		c.forget(addr)
	}
	return res, err
}

// server returns the API address to use: the current one while it is
// alive, else a live one no request failed to reach lately, else any live
// one.
func (c *serverClient) server() (string, error) {
	live := c.pool.Servers()
	c.mu.Lock()
	defer c.mu.Unlock()
	var fallback string
	for _, m := range live {
		if m.API == "" {
			continue
		}
		if m.API == c.current {
			return c.current, nil
		}
		if fallback == "" {
			fallback = m.API
		}
	}
	for _, m := range live {
		if m.API != "" && time.Since(c.failed[m.API]) > avoidFor {
			c.current = m.API
			return c.current, nil
		}
	}
	if fallback == "" {
		return "", fmt.Errorf("reach a server: %w", errNoServer)
	}
	c.current = fallback
	return c.current, nil
}

// forget stops using addr after a request to it failed, so that the next
// picks another live server if there is one.
func (c *serverClient) forget(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed == nil {
		c.failed = map[string]time.Time{}
	}
	c.failed[addr] = time.Now()
	if c.current == addr {
		c.current = ""
	}
}

var errNoServer = errors.New("no live server in the gossip pool yet")
