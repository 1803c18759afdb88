package cri

import (
	"context"
	"encoding/json"
	"fmt"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ContainerStatus returns a container's status: state, exit code, reason,
// message, timestamps, log path, image, labels and the mounts it honours. With verbose,
// Info["info"] holds a JSON object with its argv and environment.
func (s *service) ContainerStatus(ctx context.Context, req *runtime.ContainerStatusRequest) (*runtime.ContainerStatusResponse, error) {
	c, err := s.getContainer(req.GetContainerId())
	if err != nil {
		return nil, fmt.Errorf("container status: %w", err)
	}
	rec := c.snapshot()
	resp := &runtime.ContainerStatusResponse{Status: &runtime.ContainerStatus{
		Id:          rec.ID,
		Metadata:    rec.metadata(),
		State:       rec.criState(),
		CreatedAt:   rec.CreatedAt,
		StartedAt:   rec.StartedAt,
		FinishedAt:  rec.FinishedAt,
		ExitCode:    rec.ExitCode,
		Image:       rec.imageSpec(),
		ImageRef:    rec.ImageID,
		ImageId:     rec.ImageID,
		Reason:      rec.Reason,
		Message:     rec.Message,
		Labels:      copyMap(rec.Labels),
		Annotations: copyMap(rec.Annotations),
		LogPath:     rec.LogPath,
		Mounts:      criMounts(rec.Mounts),
	}}
	if req.GetVerbose() {
		handler := ""
		if sb, err := s.getSandbox(rec.SandboxID); err == nil {
			handler = sb.snapshot().RuntimeHandler
		}
		info, _ := json.Marshal(map[string]any{
			"sandboxID": rec.SandboxID,
			"runtime":   handler,
			"args":      rec.Args,
			"env":       rec.Env,
		})
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}
