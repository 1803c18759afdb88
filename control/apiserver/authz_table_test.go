package apiserver

import (
	"context"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/store"
)

// call is one API call of the table; it returns the call's error.
type call struct {
	name string
	do   func(ctx context.Context, c *testClients) error
}

func unary[T any](_ *connect.Response[T], err error) error { return err }

// watchErr opens a watch and returns its error, or nil once the server
// has accepted it.
func watchErr[T any](ctx context.Context, open func(context.Context) (*connect.ServerStreamForClient[T], error)) error {
	ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	st, err := open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	for st.Receive() {
	}
	if err := st.Err(); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// tableCalls are the calls of TestAuthorizationTable; server reads what a
// call needs to send.
func tableCalls(t *testing.T, server *testClients) []call {
	// storedNodeStatus is a status update of a node that keeps its stored
	// agentEndpoint, as the node lifecycle controller sends.
	storedNodeStatus := func(ctx context.Context, name string) *skiffv1.Node {
		res, err := server.nodes.Get(ctx, connect.NewRequest(&skiffv1.GetRequest{Name: name}))
		if err != nil {
			t.Fatal(err)
		}
		n := res.Msg
		n.Status = &skiffv1.NodeStatus{AgentEndpoint: n.GetStatus().GetAgentEndpoint(), Runtimes: []string{"wasm"}}
		return n
	}
	req := connect.NewRequest[skiffv1.GetRequest]
	return []call{
		{"deployments/get team", func(ctx context.Context, c *testClients) error {
			return unary(c.deployments.Get(ctx, req(&skiffv1.GetRequest{Namespace: "team", Name: "d"})))
		}},
		{"deployments/create team", func(ctx context.Context, c *testClients) error {
			d := deployment("d")
			d.Metadata.Namespace = "team"
			return unary(c.deployments.Create(ctx, connect.NewRequest(d)))
		}},
		{"replicasets/list team", func(ctx context.Context, c *testClients) error {
			return unary(c.replicaSets.List(ctx, connect.NewRequest(&skiffv1.ListRequest{Namespace: "team"})))
		}},
		{"replicasets/updatestatus team", func(ctx context.Context, c *testClients) error {
			return unary(c.replicaSets.UpdateStatus(ctx, connect.NewRequest(&skiffv1.ReplicaSet{Metadata: &skiffv1.ObjectMeta{Namespace: "team", Name: "rs"}})))
		}},
		{"pods/get team", func(ctx context.Context, c *testClients) error {
			return unary(c.pods.Get(ctx, req(&skiffv1.GetRequest{Namespace: "team", Name: "p-free"})))
		}},
		{"pods/get other", func(ctx context.Context, c *testClients) error {
			return unary(c.pods.Get(ctx, req(&skiffv1.GetRequest{Namespace: "other", Name: "p-o"})))
		}},
		{"pods/get team bound to n1", func(ctx context.Context, c *testClients) error {
			return unary(c.pods.Get(ctx, req(&skiffv1.GetRequest{Namespace: "team", Name: "p-n1"})))
		}},
		{"pods/get team bound to n2", func(ctx context.Context, c *testClients) error {
			return unary(c.pods.Get(ctx, req(&skiffv1.GetRequest{Namespace: "team", Name: "p-n2"})))
		}},
		{"pods/list team", func(ctx context.Context, c *testClients) error {
			return unary(c.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{Namespace: "team"})))
		}},
		{"pods/list all", func(ctx context.Context, c *testClients) error {
			return unary(c.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{})))
		}},
		{"pods/list on n1", func(ctx context.Context, c *testClients) error {
			return unary(c.pods.List(ctx, connect.NewRequest(&skiffv1.ListRequest{FieldSelector: "spec.nodeName=n1"})))
		}},
		{"pods/watch team", func(ctx context.Context, c *testClients) error {
			return watchErr(ctx, func(ctx context.Context) (*connect.ServerStreamForClient[skiffv1.PodWatchEvent], error) {
				return c.pods.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{Namespace: "team"}))
			})
		}},
		{"pods/watch on n1", func(ctx context.Context, c *testClients) error {
			return watchErr(ctx, func(ctx context.Context) (*connect.ServerStreamForClient[skiffv1.PodWatchEvent], error) {
				return c.pods.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{FieldSelector: "spec.nodeName=n1"}))
			})
		}},
		{"pods/create team", func(ctx context.Context, c *testClients) error {
			return unary(c.pods.Create(ctx, connect.NewRequest(testPod("team", "p-new", ""))))
		}},
		{"pods/create other", func(ctx context.Context, c *testClients) error {
			return unary(c.pods.Create(ctx, connect.NewRequest(testPod("other", "p-new", ""))))
		}},
		{"pods/update team", func(ctx context.Context, c *testClients) error {
			p := testPod("team", "p-free", "")
			p.Metadata.Labels = map[string]string{"touched": "yes"}
			return unary(c.pods.Update(ctx, connect.NewRequest(p)))
		}},
		{"pods/delete team", func(ctx context.Context, c *testClients) error {
			return unary(c.pods.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Namespace: "team", Name: "p-free"})))
		}},
		{"pods/delete team bound to n2", func(ctx context.Context, c *testClients) error {
			return unary(c.pods.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Namespace: "team", Name: "p-n2"})))
		}},
		{"pods/updatestatus team bound to n1", func(ctx context.Context, c *testClients) error {
			p := testPod("team", "p-n1", "n1")
			p.Status = &skiffv1.PodStatus{Phase: "Running"}
			return unary(c.pods.UpdateStatus(ctx, connect.NewRequest(p)))
		}},
		{"pods/updatestatus team bound to n2", func(ctx context.Context, c *testClients) error {
			p := testPod("team", "p-n2", "n2")
			p.Status = &skiffv1.PodStatus{Phase: "Running"}
			return unary(c.pods.UpdateStatus(ctx, connect.NewRequest(p)))
		}},
		{"pods/bind team", func(ctx context.Context, c *testClients) error {
			return unary(c.pods.Bind(ctx, connect.NewRequest(&skiffv1.BindRequest{Namespace: "team", Name: "p-free", NodeName: "n1"})))
		}},
		{"pods/logs team", func(ctx context.Context, c *testClients) error {
			return unary(c.pods.Logs(ctx, connect.NewRequest(&skiffv1.PodLogsRequest{Namespace: "team", Name: "p-free"})))
		}},
		{"pods/top team", func(ctx context.Context, c *testClients) error {
			return unary(c.pods.Top(ctx, connect.NewRequest(&skiffv1.TopPodsRequest{Namespace: "team"})))
		}},
		{"pods/top all", func(ctx context.Context, c *testClients) error {
			return unary(c.pods.Top(ctx, connect.NewRequest(&skiffv1.TopPodsRequest{AllNamespaces: true})))
		}},
		{"events/get team", func(ctx context.Context, c *testClients) error {
			return unary(c.events.Get(ctx, req(&skiffv1.GetRequest{Namespace: "team", Name: "e1"})))
		}},
		{"events/list team", func(ctx context.Context, c *testClients) error {
			return unary(c.events.List(ctx, connect.NewRequest(&skiffv1.ListRequest{Namespace: "team"})))
		}},
		{"events/create team", func(ctx context.Context, c *testClients) error {
			return unary(c.events.Create(ctx, connect.NewRequest(testEvent("team", "e-new"))))
		}},
		{"events/create other", func(ctx context.Context, c *testClients) error {
			return unary(c.events.Create(ctx, connect.NewRequest(testEvent("other", "e-new"))))
		}},
		{"events/update team", func(ctx context.Context, c *testClients) error {
			ev := testEvent("team", "e1")
			ev.Count = 7
			return unary(c.events.Update(ctx, connect.NewRequest(ev)))
		}},
		{"events/delete team", func(ctx context.Context, c *testClients) error {
			return unary(c.events.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Namespace: "team", Name: "e1"})))
		}},
		{"services/get team", func(ctx context.Context, c *testClients) error {
			return unary(c.services.Get(ctx, req(&skiffv1.GetRequest{Namespace: "team", Name: "s1"})))
		}},
		{"services/list all", func(ctx context.Context, c *testClients) error {
			return unary(c.services.List(ctx, connect.NewRequest(&skiffv1.ListRequest{})))
		}},
		{"services/watch all", func(ctx context.Context, c *testClients) error {
			return watchErr(ctx, func(ctx context.Context) (*connect.ServerStreamForClient[skiffv1.ServiceWatchEvent], error) {
				return c.services.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{}))
			})
		}},
		{"services/create team", func(ctx context.Context, c *testClients) error {
			return unary(c.services.Create(ctx, connect.NewRequest(testService("team", "s2"))))
		}},
		{"services/update team", func(ctx context.Context, c *testClients) error {
			s := testService("team", "s1")
			s.Metadata.Labels = map[string]string{"changed": "yes"}
			return unary(c.services.Update(ctx, connect.NewRequest(s)))
		}},
		{"services/delete team", func(ctx context.Context, c *testClients) error {
			return unary(c.services.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Namespace: "team", Name: "s1"})))
		}},
		{"endpoints/get team", func(ctx context.Context, c *testClients) error {
			return unary(c.endpoints.Get(ctx, req(&skiffv1.GetRequest{Namespace: "team", Name: "s1"})))
		}},
		{"endpoints/list all", func(ctx context.Context, c *testClients) error {
			return unary(c.endpoints.List(ctx, connect.NewRequest(&skiffv1.ListRequest{})))
		}},
		{"endpoints/watch all", func(ctx context.Context, c *testClients) error {
			return watchErr(ctx, func(ctx context.Context) (*connect.ServerStreamForClient[skiffv1.EndpointsWatchEvent], error) {
				return c.endpoints.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{}))
			})
		}},
		{"endpoints/create team", func(ctx context.Context, c *testClients) error {
			return unary(c.endpoints.Create(ctx, connect.NewRequest(testEndpoints("team", "s2"))))
		}},
		{"endpoints/update team", func(ctx context.Context, c *testClients) error {
			ep := testEndpoints("team", "s1")
			ep.Subsets[0].Addresses[0].Ip = "10.244.0.10"
			return unary(c.endpoints.Update(ctx, connect.NewRequest(ep)))
		}},
		{"nodes/get n1", func(ctx context.Context, c *testClients) error {
			return unary(c.nodes.Get(ctx, req(&skiffv1.GetRequest{Name: "n1"})))
		}},
		{"nodes/get n2", func(ctx context.Context, c *testClients) error {
			return unary(c.nodes.Get(ctx, req(&skiffv1.GetRequest{Name: "n2"})))
		}},
		{"nodes/list", func(ctx context.Context, c *testClients) error {
			return unary(c.nodes.List(ctx, connect.NewRequest(&skiffv1.ListRequest{})))
		}},
		{"nodes/watch", func(ctx context.Context, c *testClients) error {
			return watchErr(ctx, func(ctx context.Context) (*connect.ServerStreamForClient[skiffv1.NodeWatchEvent], error) {
				return c.nodes.Watch(ctx, connect.NewRequest(&skiffv1.WatchRequest{}))
			})
		}},
		{"nodes/create n1", func(ctx context.Context, c *testClients) error {
			return unary(c.nodes.Create(ctx, connect.NewRequest(&skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: "n1"}})))
		}},
		{"nodes/create n3", func(ctx context.Context, c *testClients) error {
			return unary(c.nodes.Create(ctx, connect.NewRequest(&skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: "n3"}})))
		}},
		{"nodes/update n2", func(ctx context.Context, c *testClients) error {
			return unary(c.nodes.Update(ctx, connect.NewRequest(&skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: "n2"}, Spec: &skiffv1.NodeSpec{Unschedulable: true}})))
		}},
		{"nodes/delete n2", func(ctx context.Context, c *testClients) error {
			return unary(c.nodes.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: "n2"})))
		}},
		{"nodes/updatestatus n1", func(ctx context.Context, c *testClients) error {
			return unary(c.nodes.UpdateStatus(ctx, connect.NewRequest(storedNodeStatus(ctx, "n1"))))
		}},
		{"nodes/updatestatus n2", func(ctx context.Context, c *testClients) error {
			return unary(c.nodes.UpdateStatus(ctx, connect.NewRequest(storedNodeStatus(ctx, "n2"))))
		}},
		{"namespaces/get team", func(ctx context.Context, c *testClients) error {
			return unary(c.namespaces.Get(ctx, req(&skiffv1.GetRequest{Name: "team"})))
		}},
		{"namespaces/list", func(ctx context.Context, c *testClients) error {
			return unary(c.namespaces.List(ctx, connect.NewRequest(&skiffv1.ListRequest{})))
		}},
		{"namespaces/create", func(ctx context.Context, c *testClients) error {
			return unary(c.namespaces.Create(ctx, connect.NewRequest(&skiffv1.Namespace{Metadata: &skiffv1.ObjectMeta{Name: "ns-new"}})))
		}},
		{"namespaces/update team", func(ctx context.Context, c *testClients) error {
			return unary(c.namespaces.Update(ctx, connect.NewRequest(&skiffv1.Namespace{Metadata: &skiffv1.ObjectMeta{Name: "team", Labels: map[string]string{"x": "y"}}})))
		}},
		{"namespaces/delete empty", func(ctx context.Context, c *testClients) error {
			return unary(c.namespaces.Delete(ctx, connect.NewRequest(&skiffv1.DeleteRequest{Name: "empty"})))
		}},
		{"cluster/members", func(ctx context.Context, c *testClients) error {
			return unary(c.cluster.Members(ctx, connect.NewRequest(&skiffv1.MembersRequest{})))
		}},
		{"cluster/snapshot", func(ctx context.Context, c *testClients) error {
			st, err := c.cluster.Snapshot(ctx, connect.NewRequest(&skiffv1.SnapshotRequest{}))
			if err != nil {
				return err
			}
			defer st.Close()
			for st.Receive() {
			}
			return st.Err()
		}},
		{"tokens/create team", func(ctx context.Context, c *testClients) error {
			return unary(c.auth.CreateToken(ctx, connect.NewRequest(&skiffv1.CreateTokenRequest{Namespace: "team", Role: RoleAdmin})))
		}},
		{"tokens/create cluster", func(ctx context.Context, c *testClients) error {
			return unary(c.auth.CreateToken(ctx, connect.NewRequest(&skiffv1.CreateTokenRequest{Role: RoleView})))
		}},
		{"tokens/list team", func(ctx context.Context, c *testClients) error {
			return unary(c.auth.ListTokens(ctx, connect.NewRequest(&skiffv1.ListTokensRequest{Namespace: "team"})))
		}},
		{"tokens/list other", func(ctx context.Context, c *testClients) error {
			return unary(c.auth.ListTokens(ctx, connect.NewRequest(&skiffv1.ListTokensRequest{Namespace: "other"})))
		}},
		{"tokens/revoke team", func(ctx context.Context, c *testClients) error {
			return unary(c.auth.RevokeToken(ctx, connect.NewRequest(&skiffv1.RevokeTokenRequest{Id: teamTokenID})))
		}},
		{"tokens/revoke cluster", func(ctx context.Context, c *testClients) error {
			return unary(c.auth.RevokeToken(ctx, connect.NewRequest(&skiffv1.RevokeTokenRequest{Id: clusterTokenID})))
		}},
		{"auth/whoami", func(ctx context.Context, c *testClients) error {
			return unary(c.auth.WhoAmI(ctx, connect.NewRequest(&skiffv1.WhoAmIRequest{})))
		}},
		{"auth/can-i", func(ctx context.Context, c *testClients) error {
			return unary(c.auth.CanI(ctx, connect.NewRequest(&skiffv1.CanIRequest{Verb: "get", Kind: "pods"})))
		}},
	}
}

// allowed lists, for a principal of the table, the calls it may make.
func allowedCalls(all []call, names ...[]string) map[string]bool {
	m := map[string]bool{"auth/whoami": true, "auth/can-i": true}
	for _, ns := range names {
		for _, n := range ns {
			m[n] = true
		}
	}
	for n := range m {
		if !slices.ContainsFunc(all, func(c call) bool { return c.name == n }) {
			panic("no call " + n)
		}
	}
	return m
}

// TestAuthorizationTable makes every call of the table as every sort of
// principal: a refused call is Unauthenticated or PermissionDenied and
// changes nothing in the store; an allowed call is not refused.
func TestAuthorizationTable(t *testing.T) {
	e := newAuthEnv(t)
	ctx := context.Background()
	server := e.clients(t, cred{cert: "server:s1"})
	e.reset(t, server)
	calls := tableCalls(t, server)

	viewTeam := []string{
		"pods/get team", "pods/get team bound to n1", "pods/get team bound to n2", "pods/list team",
		"pods/watch team", "pods/logs team", "pods/top team", "events/get team", "events/list team",
		"services/get team", "endpoints/get team", "deployments/get team", "replicasets/list team",
	}
	editTeam := append(slices.Clone(viewTeam),
		"pods/create team", "pods/update team", "pods/delete team", "pods/delete team bound to n2",
		"events/create team", "events/update team", "events/delete team",
		"services/create team", "services/update team", "services/delete team", "endpoints/create team", "endpoints/update team",
		"deployments/create team")
	adminTeam := append(slices.Clone(editTeam), "tokens/create team", "tokens/list team", "tokens/revoke team")
	viewAll := append(slices.Clone(viewTeam),
		"pods/get other", "pods/list all", "pods/top all", "pods/list on n1", "pods/watch on n1",
		"nodes/get n1", "nodes/get n2", "nodes/list", "nodes/watch",
		"namespaces/get team", "namespaces/list", "cluster/members",
		"services/list all", "services/watch all", "endpoints/list all", "endpoints/watch all")
	editAll := append(slices.Clone(viewAll), editTeam...)
	editAll = append(editAll, "pods/create other", "events/create other",
		"nodes/create n1", "nodes/create n3", "nodes/update n2", "nodes/delete n2",
		"namespaces/create", "namespaces/update team", "namespaces/delete empty")
	var every []string
	for _, c := range calls {
		every = append(every, c.name)
	}
	node := []string{
		"pods/get team bound to n1", "pods/list on n1", "pods/watch on n1", "pods/updatestatus team bound to n1",
		"events/get team", "events/create team", "events/create other", "events/update team",
		"nodes/get n1", "nodes/create n1", "nodes/updatestatus n1", "nodes/list", "nodes/watch",
		"services/get team", "services/list all", "services/watch all", "endpoints/get team", "endpoints/list all", "endpoints/watch all",
	}

	revoked := e.putToken(t, "revokedtoken", "", RoleAdmin, time.Time{})
	if _, err := e.st.Txn(ctx, store.Txn{Ops: []store.Op{store.DeleteOp(tokenKey("revokedtoken"), 0)}}); err != nil {
		t.Fatal(err)
	}
	principals := []struct {
		name    string
		cred    cred
		allowed map[string]bool
		code    connect.Code // of a refusal
	}{
		{"anonymous", cred{}, map[string]bool{}, connect.CodeUnauthenticated},
		{"revoked token", cred{token: revoked}, map[string]bool{}, connect.CodeUnauthenticated},
		{"expired token", cred{token: e.putToken(t, "expiredtoken", "", RoleAdmin, e.clock.Now().Add(-time.Second))}, map[string]bool{}, connect.CodeUnauthenticated},
		{"wrong secret", cred{token: "viewteamaaaa.wrong"}, map[string]bool{}, connect.CodeUnauthenticated},
		{"view in team", cred{token: e.putToken(t, "viewteamaaaa", "team", RoleView, time.Time{})}, allowedCalls(calls, viewTeam), connect.CodePermissionDenied},
		{"edit in team", cred{token: e.putToken(t, "editteamaaaa", "team", RoleEdit, time.Time{})}, allowedCalls(calls, editTeam), connect.CodePermissionDenied},
		{"admin in team", cred{token: e.putToken(t, "adminteamaaa", "team", RoleAdmin, e.clock.Now().Add(time.Hour))}, allowedCalls(calls, adminTeam), connect.CodePermissionDenied},
		{"view cluster-wide", cred{token: e.putToken(t, "viewallaaaaa", "", RoleView, time.Time{})}, allowedCalls(calls, viewAll), connect.CodePermissionDenied},
		{"edit cluster-wide", cred{token: e.putToken(t, "editallaaaaa", "", RoleEdit, time.Time{})}, allowedCalls(calls, editAll), connect.CodePermissionDenied},
		{"admin cluster-wide", cred{token: e.bootstrap}, allowedCalls(calls, every), connect.CodePermissionDenied},
		{"node n1", cred{cert: "node:n1"}, allowedCalls(calls, node), connect.CodePermissionDenied},
		{"server", cred{cert: "server:s1"}, allowedCalls(calls, every), connect.CodePermissionDenied},
		// A certificate the server does not map is no credential.
		{"unknown certificate", cred{cert: "someone"}, map[string]bool{}, connect.CodeUnauthenticated},
	}
	for _, p := range principals {
		t.Run(p.name, func(t *testing.T) {
			c := e.clients(t, p.cred)
			for _, call := range calls {
				e.reset(t, server)
				before := e.state(t)
				err := call.do(ctx, c)
				code := connect.CodeOf(err)
				refused := code == connect.CodeUnauthenticated || code == connect.CodePermissionDenied
				if p.allowed[call.name] {
					if refused {
						t.Errorf("%s: refused: %v", call.name, err)
					}
					continue
				}
				if err == nil || code != p.code {
					t.Errorf("%s: got %v, want %v", call.name, err, p.code)
				}
				if after := e.state(t); !slices.Equal(before, after) {
					t.Errorf("%s: a refused call changed the store:\nbefore %v\nafter  %v", call.name, before, after)
				}
			}
		})
	}
}
