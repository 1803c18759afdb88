package apiserver

import "testing"

// TestStreamVerbs: exec and port-forward reach into a pod, so they take
// the edit role in the pod's namespace, as Kubernetes' pods/exec create;
// view, another namespace's token and a node are refused.
func TestStreamVerbs(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Principal
		want bool
	}{
		{"edit", Principal{Name: "token:e", Role: RoleEdit, Namespace: "shop"}, true},
		{"cluster admin", Principal{Name: "token:a", Role: RoleAdmin}, true},
		{"namespace admin", Principal{Name: "token:n", Role: RoleAdmin, Namespace: "shop"}, true},
		{"view", Principal{Name: "token:v", Role: RoleView, Namespace: "shop"}, false},
		{"cluster view", Principal{Name: "token:cv", Role: RoleView}, false},
		{"edit elsewhere", Principal{Name: "token:o", Role: RoleEdit, Namespace: "other"}, false},
		{"node", Principal{Name: "node:n1", Node: "n1"}, false},
		{"server", Principal{Name: "server:s1", Server: true}, true},
	} {
		for _, verb := range []string{"exec", "portforward"} {
			ok, why := authorize(tc.p, attrs{verb: verb, kind: "pods", ns: "shop", name: "web"})
			if ok != tc.want {
				t.Errorf("%s %s pod shop/web: allowed %v (%s), want %v", tc.name, verb, ok, why, tc.want)
			}
		}
	}
}
