package cri

import (
	"context"
	"encoding/json"
	"fmt"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PodSandboxStatus returns a sandbox's status; with verbose, Info["info"]
// holds a JSON object with its network namespace path.
func (s *service) PodSandboxStatus(ctx context.Context, req *runtime.PodSandboxStatusRequest) (*runtime.PodSandboxStatusResponse, error) {
	sb, err := s.getSandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, fmt.Errorf("pod sandbox status: %w", err)
	}
	rec := sb.snapshot()
	st := &runtime.PodSandboxStatus{
		Id:             rec.ID,
		Metadata:       rec.metadata(),
		State:          rec.criState(),
		CreatedAt:      rec.CreatedAt,
		Network:        &runtime.PodSandboxNetworkStatus{},
		Labels:         copyMap(rec.Labels),
		Annotations:    copyMap(rec.Annotations),
		RuntimeHandler: rec.RuntimeHandler,
	}
	network := runtime.NamespaceMode_POD
	if rec.HostNetwork {
		network = runtime.NamespaceMode_NODE
	}
	st.Linux = &runtime.LinuxPodSandboxStatus{Namespaces: &runtime.Namespace{Options: &runtime.NamespaceOption{Network: network}}}
	if len(rec.IPs) > 0 {
		st.Network.Ip = rec.IPs[0]
		for _, ip := range rec.IPs[1:] {
			st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtime.PodIP{Ip: ip})
		}
	}
	resp := &runtime.PodSandboxStatusResponse{Status: st, Timestamp: s.now().UnixNano()}
	if req.GetVerbose() {
		info, _ := json.Marshal(map[string]any{
			"netnsPath":    rec.NetNSPath,
			"hostNetwork":  rec.HostNetwork,
			"logDirectory": rec.LogDirectory,
			"hostname":     rec.Hostname,
		})
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}
