package server

import (
	"sort"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/cluster"
	"skiff.dev/skiff/control/store"
)

// members merges the Raft configuration (who votes, who leads) with the
// gossip pool (who is alive, and the agents), as this server sees them.
// pool is nil when the server runs without gossip; self is this server's
// API address.
func members(st *store.Store, pool *cluster.Pool, self string) ([]*skiffv1.Member, error) {
	servers, err := st.RaftServers()
	if err != nil {
		return nil, err
	}
	byName := map[string]*skiffv1.Member{}
	for _, r := range servers {
		role := "nonvoter"
		switch {
		case r.Leader:
			role = "leader"
		case r.Voter:
			role = "voter"
		}
		m := &skiffv1.Member{Name: r.ID, Role: string(cluster.RoleServer), RaftRole: role, RaftAddress: r.Address, State: "unknown"}
		if r.ID == st.ServerID() {
			m.ApiAddress, m.State = self, string(cluster.StateAlive)
		}
		byName[r.ID] = m
	}
	if pool != nil {
		for _, pm := range pool.Members() {
			m := byName[pm.Name]
			if m == nil {
				m = &skiffv1.Member{Name: pm.Name, Role: string(pm.Role), RaftAddress: pm.Raft}
				byName[pm.Name] = m
			}
			m.GossipAddress, m.ApiAddress, m.State = pm.Gossip, pm.API, string(pm.State)
		}
	}
	out := make([]*skiffv1.Member, 0, len(byName))
	for _, m := range byName {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Role != out[j].Role {
			return out[i].Role == string(cluster.RoleServer)
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}
