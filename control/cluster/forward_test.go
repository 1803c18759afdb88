package cluster

import (
	"net/http/httptest"
	"testing"
)

// TestKindOf: which server answers which call.
func TestKindOf(t *testing.T) {
	tests := []struct {
		path  string
		stale bool
		want  callKind
	}{
		{"/skiff.v1.PodService/Create", false, write},
		{"/skiff.v1.PodService/Bind", false, write},
		{"/skiff.v1.NodeService/UpdateStatus", false, write},
		{"/skiff.v1.NamespaceService/Delete", false, write},
		{"/skiff.v1.PodService/Get", false, read},
		{"/skiff.v1.PodService/List", false, read},
		{"/skiff.v1.ClusterService/Snapshot", false, read},
		{"/skiff.v1.PodService/List", true, local},
		{"/skiff.v1.PodService/Get", true, local},
		{"/skiff.v1.PodService/Watch", false, local},
		{"/skiff.v1.PodService/Logs", false, local},
		{"/skiff.v1.ClusterService/Members", false, local},
		{"/healthz", false, local},
		{"/", false, local},
		{"/other.v1.Service/Create", false, local},
		{"/skiff.v1.PodService/Create/extra", false, local},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("POST", tt.path, nil)
		if tt.stale {
			r.Header.Set(ConsistencyHeader, "stale")
		}
		if got := kindOf(r); got != tt.want {
			t.Errorf("kindOf(%s, stale %v) = %d, want %d", tt.path, tt.stale, got, tt.want)
		}
	}
}
