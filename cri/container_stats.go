package cri

import (
	"context"
	"fmt"
	"strings"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ContainerStats returns a container's resource use: memory working set
// (and usage) is the size of its linear memory, CPU usage the CPU time of
// the thread running its guest. A container that has exited reports its
// CPU time and no memory; one not running in this process (created before
// a restart) reports zeros.
func (s *service) ContainerStats(ctx context.Context, req *runtime.ContainerStatsRequest) (*runtime.ContainerStatsResponse, error) {
	c, err := s.getContainer(req.GetContainerId())
	if err != nil {
		return nil, fmt.Errorf("container stats: %w", err)
	}
	return &runtime.ContainerStatsResponse{Stats: c.stats()}, nil
}

// ListContainerStats returns the stats of the containers that match the
// filter (ID or ID prefix, sandbox ID or prefix, labels), oldest first.
func (s *service) ListContainerStats(ctx context.Context, req *runtime.ListContainerStatsRequest) (*runtime.ListContainerStatsResponse, error) {
	f := req.GetFilter()
	var out []*runtime.ContainerStats
	var created []int64
	for _, c := range s.allContainers() {
		rec := c.snapshot()
		if !strings.HasPrefix(rec.ID, f.GetId()) || !strings.HasPrefix(rec.SandboxID, f.GetPodSandboxId()) || !matchLabels(rec.Labels, f.GetLabelSelector()) {
			continue
		}
		out = append(out, c.stats())
		created = append(created, rec.CreatedAt)
	}
	byCreated := make(map[*runtime.ContainerStats]int64, len(out))
	for i, st := range out {
		byCreated[st] = created[i]
	}
	sortByCreated(out, func(st *runtime.ContainerStats) int64 { return byCreated[st] })
	return &runtime.ListContainerStatsResponse{Stats: out}, nil
}

func (s *service) allContainers() []*container {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*container, 0, len(s.containers))
	for _, c := range s.containers {
		out = append(out, c)
	}
	return out
}

// stats returns the container's stats now.
func (c *container) stats() *runtime.ContainerStats {
	c.mu.Lock()
	rec, t := c.rec, c.task
	c.mu.Unlock()
	var cpu, mem uint64
	ts := nowNanos()
	if t != nil {
		st := t.Stats()
		cpu, mem, ts = uint64(st.CPUTime), st.MemoryBytes, st.Timestamp.UnixNano()
	}
	return &runtime.ContainerStats{
		Attributes: &runtime.ContainerAttributes{
			Id:          rec.ID,
			Metadata:    rec.metadata(),
			Labels:      copyMap(rec.Labels),
			Annotations: copyMap(rec.Annotations),
		},
		Cpu: &runtime.CpuUsage{Timestamp: ts, UsageCoreNanoSeconds: &runtime.UInt64Value{Value: cpu}},
		Memory: &runtime.MemoryUsage{
			Timestamp:       ts,
			WorkingSetBytes: &runtime.UInt64Value{Value: mem},
			UsageBytes:      &runtime.UInt64Value{Value: mem},
		},
		WritableLayer: &runtime.FilesystemUsage{
			Timestamp: ts,
			UsedBytes: &runtime.UInt64Value{},
			FsId:      &runtime.FilesystemIdentifier{},
		},
	}
}
