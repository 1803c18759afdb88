package cri

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
	"google.golang.org/grpc/codes"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/netns"
)

func needRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: creates network namespaces")
	}
}

// cleanupPins deletes every namespace pinned under the env's state dir when
// the test ends, whatever happened.
func cleanupPins(t *testing.T, e *env) {
	dir := e.ns.(hostNamespaces).dir
	t.Cleanup(func() {
		paths, _ := netns.List(dir)
		for _, p := range paths {
			netns.Delete(p)
		}
	})
}

func TestPodNetworkNamespace(t *testing.T) {
	needRoot(t)
	e := newEnv(t, true)
	cleanupPins(t, e)
	ctx := context.Background()
	pod := e.runPod("net")
	st, err := e.rs.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: pod, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		NetNSPath string `json:"netnsPath"`
	}
	if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(e.ns.(hostNamespaces).dir, pod); info.NetNSPath != want {
		t.Errorf("netns path = %q, want %q", info.NetNSPath, want)
	}
	if ok, _ := netns.IsPinned(info.NetNSPath); !ok {
		t.Fatal("sandbox namespace is not pinned")
	}
	err = netns.Do(info.NetNSPath, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if lo.Attrs().Flags&net.FlagUp == 0 {
			t.Error("loopback is down in the pod namespace")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	if _, err := e.rs.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := netns.IsPinned(info.NetNSPath); ok {
		t.Error("namespace still pinned after StopPodSandbox")
	}
	if _, err := e.rs.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	if paths, _ := netns.List(e.ns.(hostNamespaces).dir); len(paths) != 0 {
		t.Errorf("pins left: %v", paths)
	}
}

func TestPodNetworkNamespaceFailure(t *testing.T) {
	needRoot(t)
	e := newEnv(t, true)
	cleanupPins(t, e)
	dir := e.ns.(hostNamespaces).dir
	os.MkdirAll(filepath.Dir(dir), 0o755)
	if err := os.WriteFile(dir, nil, 0o644); err != nil { // the pin directory cannot be made
		t.Fatal(err)
	}
	_, err := e.rs.RunPodSandbox(context.Background(), &runtime.RunPodSandboxRequest{Config: podConfig("p", "")})
	wantCode(t, err, codes.Unknown, "create network namespace")
	list, _ := e.rs.ListPodSandbox(context.Background(), &runtime.ListPodSandboxRequest{})
	if len(list.Items) != 0 {
		t.Errorf("a failed RunPodSandbox left %d sandboxes", len(list.Items))
	}
	os.Remove(dir)
	e.runPod("p") // the name was released
}
