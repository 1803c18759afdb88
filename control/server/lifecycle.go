package server

import (
	"skiff.dev/skiff/control/cluster"
	"skiff.dev/skiff/control/controllers"
)

// agentView is what the node lifecycle controller is told of the gossip
// pool: its agents and when they change.
type agentView struct {
	agents  func() []controllers.AgentMember
	changed func() <-chan struct{}
}

// poolAgents adapts the gossip pool to the node lifecycle controller; the
// zero view (heartbeats alone) when the server does not gossip.
func poolAgents(pool *cluster.Pool) agentView {
	if pool == nil {
		return agentView{}
	}
	return agentView{
		agents: func() []controllers.AgentMember {
			var out []controllers.AgentMember
			for _, m := range pool.Members() {
				if m.Role == cluster.RoleAgent {
					out = append(out, controllers.AgentMember{Name: m.Name, State: controllers.AgentState(m.State)})
				}
			}
			return out
		},
		changed: pool.Changed,
	}
}
