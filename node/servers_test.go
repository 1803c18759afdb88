package node

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"skiff.dev/skiff/control/cluster"
)

// TestServerClientMoves: a node's requests go to a live server of the pool
// and, when that server stops answering, to another.
func TestServerClientMoves(t *testing.T) {
	serve := func(name string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) }))
	}
	a, b := serve("a"), serve("b")
	defer b.Close()
	join := func(name string, role cluster.Role, api string, peers ...string) *cluster.Pool {
		p, err := cluster.Join(cluster.Config{Name: name, Role: role, Bind: "127.0.0.1:0", API: api, Peers: peers})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Shutdown() })
		return p
	}
	host := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }
	sa := join("server-a", cluster.RoleServer, host(a))
	join("server-b", cluster.RoleServer, host(b), sa.Addr())
	agent := join("edge", cluster.RoleAgent, "", sa.Addr())
	deadline := time.After(10 * time.Second)
	for len(agent.Servers()) < 2 {
		select {
		case <-agent.Changed():
		case <-deadline:
			t.Fatalf("the agent sees %v", agent.Members())
		}
	}

	c := &serverClient{pool: agent, hc: &http.Client{Timeout: 5 * time.Second}}
	get := func() (string, error) {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+poolHost+"/x", nil)
		res, err := c.Do(req)
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return string(b), err
	}
	if got, err := get(); err != nil || got != "a" {
		t.Fatalf("first request went to %q (%v), want a", got, err)
	}
	a.Close() // server a stops answering; the pool has not noticed yet
	if _, err := get(); err == nil {
		t.Fatal("a request to a stopped server succeeded")
	}
	for i := 0; i < 3; i++ {
		if got, err := get(); err != nil || got != "b" {
			t.Errorf("request %d after a stopped went to %q (%v), want b", i, got, err)
		}
	}
}
