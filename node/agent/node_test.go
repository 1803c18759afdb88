package agent

import (
	"context"
	"log/slog"
	"slices"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

// fakeNodes is the API's node service as the agent sees it: Create
// allocates a pod CIDR as the apiserver does, UpdateStatus keeps the
// status it is given.
type fakeNodes struct {
	skiffv1connect.NodeServiceClient
	node *skiffv1.Node
}

func (f *fakeNodes) Create(_ context.Context, r *connect.Request[skiffv1.Node]) (*connect.Response[skiffv1.Node], error) {
	if f.node != nil {
		return nil, connect.NewError(connect.CodeAlreadyExists, nil)
	}
	f.node = r.Msg
	f.node.Spec.PodCidr = "10.244.3.0/24"
	return connect.NewResponse(f.node), nil
}

func (f *fakeNodes) Get(context.Context, *connect.Request[skiffv1.GetRequest]) (*connect.Response[skiffv1.Node], error) {
	return connect.NewResponse(f.node), nil
}

// UpdateStatus allocates a pod CIDR to a node that has none, as the
// apiserver does for a node registered before it could have one.
func (f *fakeNodes) UpdateStatus(_ context.Context, r *connect.Request[skiffv1.Node]) (*connect.Response[skiffv1.Node], error) {
	f.node.Status = r.Msg.Status
	if f.node.Spec.PodCidr == "" {
		f.node.Spec.PodCidr = "10.244.7.0/24"
	}
	return connect.NewResponse(f.node), nil
}

// cidrCRI records the pod CIDRs given to the CRI server.
type cidrCRI struct {
	*fakeCRI
	cidrs []string
}

func (c *cidrCRI) Status(context.Context, *runtimeapi.StatusRequest, ...grpc.CallOption) (*runtimeapi.StatusResponse, error) {
	return &runtimeapi.StatusResponse{Status: &runtimeapi.RuntimeStatus{}}, nil
}

func (c *cidrCRI) UpdateRuntimeConfig(_ context.Context, r *runtimeapi.UpdateRuntimeConfigRequest, _ ...grpc.CallOption) (*runtimeapi.UpdateRuntimeConfigResponse, error) {
	c.cidrs = append(c.cidrs, r.GetRuntimeConfig().GetNetworkConfig().GetPodCidr())
	return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
}

// TestRegisterGivesPodCIDRToCRI: the pod CIDR the control plane allocated
// to the node reaches the CRI server once, as the kubelet's
// UpdateRuntimeConfig; the node reports its InternalIP.
func TestRegisterGivesPodCIDRToCRI(t *testing.T) {
	cri := &cidrCRI{fakeCRI: newFakeCRI()}
	nodes := &fakeNodes{}
	a := New(Config{NodeName: "n1", NodeIP: "192.0.2.11", Nodes: nodes, Runtime: cri, Images: cri, Logger: slog.New(slog.DiscardHandler)})
	ctx := context.Background()
	if err := a.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.updateStatus(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cri.cidrs, []string{"10.244.3.0/24"}) {
		t.Errorf("CRI was given pod CIDRs %q, want 10.244.3.0/24 once", cri.cidrs)
	}

	// A node registered before pod CIDRs existed gets one with its first
	// status update, which the CRI server has at once.
	cri2 := &cidrCRI{fakeCRI: newFakeCRI()}
	old := &fakeNodes{node: &skiffv1.Node{Metadata: &skiffv1.ObjectMeta{Name: "n2"}, Spec: &skiffv1.NodeSpec{}}}
	a2 := New(Config{NodeName: "n2", Nodes: old, Runtime: cri2, Images: cri2, Logger: slog.New(slog.DiscardHandler)})
	if err := a2.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cri2.cidrs, []string{"10.244.7.0/24"}) {
		t.Errorf("an upgraded node's CRI was given pod CIDRs %q at registration, want 10.244.7.0/24", cri2.cidrs)
	}
	var internal string
	for _, ad := range nodes.node.GetStatus().GetAddresses() {
		if ad.GetType() == "InternalIP" {
			internal = ad.GetAddress()
		}
	}
	if internal != "192.0.2.11" {
		t.Errorf("node reports InternalIP %q, want 192.0.2.11", internal)
	}
}
