package cri

import (
	"context"
	"errors"
	"os"
	"regexp"
	"testing"

	"google.golang.org/grpc/codes"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

var idPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

func TestSandboxLifecycle(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	ns := e.ns.(*fakeNamespaces)

	id := e.runPod("web")
	if !idPattern.MatchString(id) {
		t.Fatalf("sandbox ID %q is not 64 hex digits", id)
	}
	st, err := e.rs.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: id[:12], Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	s := st.Status
	if s.Id != id || s.State != runtime.PodSandboxState_SANDBOX_READY || s.Metadata.Name != "web" ||
		s.Metadata.Namespace != "default" || s.Labels["app"] != "web" || s.RuntimeHandler != "" || s.CreatedAt == 0 {
		t.Errorf("status = %v", s)
	}
	if ns.count() != 1 {
		t.Errorf("%d namespaces pinned, want 1", ns.count())
	}

	list, err := e.rs.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
	if err != nil || len(list.Items) != 1 || list.Items[0].Id != id {
		t.Fatalf("ListPodSandbox = %v, %v", list, err)
	}

	if _, err := e.rs.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rs.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Errorf("second StopPodSandbox = %v, want success", err)
	}
	st, _ = e.rs.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: id})
	if st.GetStatus().GetState() != runtime.PodSandboxState_SANDBOX_NOTREADY {
		t.Errorf("state after stop = %v", st.GetStatus().GetState())
	}
	if ns.count() != 0 {
		t.Errorf("namespace still pinned after StopPodSandbox")
	}

	if _, err := e.rs.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rs.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Errorf("second RemovePodSandbox = %v, want success", err)
	}
	_, err = e.rs.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: id})
	wantCode(t, err, codes.NotFound, id)
	// The CRI spec: stopping a sandbox that is gone is not an error.
	if _, err := e.rs.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Errorf("StopPodSandbox of a removed sandbox = %v, want success", err)
	}

	// The name is free again.
	e.runPod("web")
}

func TestRunPodSandboxRejects(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	tests := []struct {
		name  string
		req   *runtime.RunPodSandboxRequest
		code  codes.Code
		parts []string
	}{
		{
			name:  "runc handler",
			req:   &runtime.RunPodSandboxRequest{Config: podConfig("a", ""), RuntimeHandler: "runc"},
			code:  codes.InvalidArgument,
			parts: []string{`runtime handler "runc" is not available on this node`},
		},
		{
			name:  "no metadata",
			req:   &runtime.RunPodSandboxRequest{Config: &runtime.PodSandboxConfig{}},
			code:  codes.InvalidArgument,
			parts: []string{"config.metadata.name is required"},
		},
		{
			name:  "no config",
			req:   &runtime.RunPodSandboxRequest{},
			code:  codes.InvalidArgument,
			parts: []string{"config.metadata.name is required"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.rs.RunPodSandbox(ctx, tt.req)
			wantCode(t, err, tt.code, tt.parts...)
		})
	}

	// Same name, namespace, uid and attempt twice.
	first := e.runPod("dup")
	_, err := e.rs.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: podConfig("dup", "")})
	wantCode(t, err, codes.AlreadyExists, first)

	// "wasm" is accepted by name.
	if _, err := e.rs.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: podConfig("named", ""), RuntimeHandler: "wasm"}); err != nil {
		t.Fatal(err)
	}

	list, _ := e.rs.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
	if len(list.Items) != 2 {
		t.Errorf("%d sandboxes after the rejects, want 2", len(list.Items))
	}
}

func TestRunPodSandboxLeavesNothingOnFailure(t *testing.T) {
	e := newEnv(t, false)
	ns := e.ns.(*fakeNamespaces)
	ns.mu.Lock()
	ns.failCreate = errors.New("boom: no namespaces today")
	ns.mu.Unlock()
	_, err := e.rs.RunPodSandbox(context.Background(), &runtime.RunPodSandboxRequest{Config: podConfig("p", "")})
	wantCode(t, err, codes.Unknown, "boom")
	list, _ := e.rs.ListPodSandbox(context.Background(), &runtime.ListPodSandboxRequest{})
	if len(list.Items) != 0 || ns.count() != 0 {
		t.Fatalf("left behind: %d sandboxes, %d namespaces", len(list.Items), ns.count())
	}
	ns.mu.Lock()
	ns.failCreate = nil
	ns.mu.Unlock()
	e.runPod("p") // the name was released
	e.restart()
	list, _ = e.rs.ListPodSandbox(context.Background(), &runtime.ListPodSandboxRequest{})
	if len(list.Items) != 1 {
		t.Fatalf("after restart: %d sandboxes, want 1", len(list.Items))
	}
}

func TestRunPodSandboxNeedsRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("runs as root: the root check cannot fail")
	}
	_, err := hostNamespaces{dir: t.TempDir()}.Create("x")
	if codeOf(err) != codes.FailedPrecondition {
		t.Fatalf("Create as non-root = %v, want FailedPrecondition", err)
	}
}

func TestHostNetworkPod(t *testing.T) {
	e := newEnv(t, false)
	cfg := podConfig("host", "")
	cfg.Linux = &runtime.LinuxPodSandboxConfig{SecurityContext: &runtime.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtime.NamespaceOption{Network: runtime.NamespaceMode_NODE},
	}}
	resp, err := e.rs.RunPodSandbox(context.Background(), &runtime.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if n := e.ns.(*fakeNamespaces).count(); n != 0 {
		t.Errorf("host-network pod got %d namespaces", n)
	}
	st, _ := e.rs.PodSandboxStatus(context.Background(), &runtime.PodSandboxStatusRequest{PodSandboxId: resp.PodSandboxId})
	if st.GetStatus().GetLinux().GetNamespaces().GetOptions().GetNetwork() != runtime.NamespaceMode_NODE {
		t.Errorf("status = %v", st.GetStatus())
	}
}

func TestListPodSandboxFilters(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	a := e.runPod("a")
	b := e.runPod("b")
	if _, err := e.rs.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: b}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		filter *runtime.PodSandboxFilter
		want   []string
	}{
		{name: "none", filter: nil, want: []string{a, b}},
		{name: "id", filter: &runtime.PodSandboxFilter{Id: a}, want: []string{a}},
		{name: "id prefix", filter: &runtime.PodSandboxFilter{Id: b[:8]}, want: []string{b}},
		{name: "ready", filter: &runtime.PodSandboxFilter{State: &runtime.PodSandboxStateValue{State: runtime.PodSandboxState_SANDBOX_READY}}, want: []string{a}},
		{name: "not ready", filter: &runtime.PodSandboxFilter{State: &runtime.PodSandboxStateValue{State: runtime.PodSandboxState_SANDBOX_NOTREADY}}, want: []string{b}},
		{name: "label", filter: &runtime.PodSandboxFilter{LabelSelector: map[string]string{"app": "b"}}, want: []string{b}},
		{name: "label miss", filter: &runtime.PodSandboxFilter{LabelSelector: map[string]string{"app": "c"}}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := e.rs.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{Filter: tt.filter})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range resp.Items {
				got = append(got, p.Id)
			}
			if len(got) != len(tt.want) || (len(got) > 0 && !equalSets(got, tt.want)) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func equalSets(a, b []string) bool {
	m := map[string]int{}
	for _, x := range a {
		m[x]++
	}
	for _, x := range b {
		m[x]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return true
}

func TestVersionAndStatus(t *testing.T) {
	e := newEnv(t, false)
	v, err := e.rs.Version(context.Background(), &runtime.VersionRequest{})
	if err != nil || v.RuntimeName != "skiff" || v.RuntimeApiVersion != "v1" || v.RuntimeVersion == "" {
		t.Fatalf("Version = %v, %v", v, err)
	}
	st, err := e.rs.Status(context.Background(), &runtime.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	conds := map[string]bool{}
	for _, c := range st.Status.Conditions {
		conds[c.Type] = c.Status
	}
	if !conds[runtime.RuntimeReady] || !conds[runtime.NetworkReady] {
		t.Errorf("conditions = %v", st.Status.Conditions)
	}
	if len(st.RuntimeHandlers) != 1 || st.RuntimeHandlers[0].Name != "wasm" {
		t.Errorf("runtime handlers = %v", st.RuntimeHandlers)
	}
}
