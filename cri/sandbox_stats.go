package cri

import (
	"context"
	"fmt"
	"strings"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PodSandboxStats returns a sandbox's resource use: the sum of its
// containers' (see ContainerStats), with each container's stats.
func (s *service) PodSandboxStats(ctx context.Context, req *runtime.PodSandboxStatsRequest) (*runtime.PodSandboxStatsResponse, error) {
	sb, err := s.getSandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, fmt.Errorf("pod sandbox stats: %w", err)
	}
	return &runtime.PodSandboxStatsResponse{Stats: s.sandboxStats(sb.snapshot())}, nil
}

// ListPodSandboxStats returns the stats of the sandboxes that match the
// filter (ID or ID prefix, labels), oldest first.
func (s *service) ListPodSandboxStats(ctx context.Context, req *runtime.ListPodSandboxStatsRequest) (*runtime.ListPodSandboxStatsResponse, error) {
	f := req.GetFilter()
	s.mu.RLock()
	var sbs []*sandbox
	for _, id := range sortedKeys(s.sandboxes) {
		if strings.HasPrefix(id, f.GetId()) {
			sbs = append(sbs, s.sandboxes[id])
		}
	}
	s.mu.RUnlock()
	var recs []sandboxRecord
	for _, sb := range sbs {
		if rec := sb.snapshot(); matchLabels(rec.Labels, f.GetLabelSelector()) {
			recs = append(recs, rec)
		}
	}
	sortByCreated(recs, func(r sandboxRecord) int64 { return r.CreatedAt })
	out := make([]*runtime.PodSandboxStats, 0, len(recs))
	for _, rec := range recs {
		out = append(out, s.sandboxStats(rec))
	}
	return &runtime.ListPodSandboxStatsResponse{Stats: out}, nil
}

func (s *service) sandboxStats(rec sandboxRecord) *runtime.PodSandboxStats {
	ts := nowNanos()
	var cpu, mem uint64
	var containers []*runtime.ContainerStats
	for _, c := range s.containersOf(rec.ID) {
		st := c.stats()
		cpu += st.GetCpu().GetUsageCoreNanoSeconds().GetValue()
		mem += st.GetMemory().GetWorkingSetBytes().GetValue()
		containers = append(containers, st)
	}
	return &runtime.PodSandboxStats{
		Attributes: &runtime.PodSandboxAttributes{
			Id:          rec.ID,
			Metadata:    rec.metadata(),
			Labels:      copyMap(rec.Labels),
			Annotations: copyMap(rec.Annotations),
		},
		Linux: &runtime.LinuxPodSandboxStats{
			Cpu: &runtime.CpuUsage{Timestamp: ts, UsageCoreNanoSeconds: &runtime.UInt64Value{Value: cpu}},
			Memory: &runtime.MemoryUsage{
				Timestamp:       ts,
				WorkingSetBytes: &runtime.UInt64Value{Value: mem},
				UsageBytes:      &runtime.UInt64Value{Value: mem},
			},
			Containers: containers,
		},
	}
}

func nowNanos() int64 { return time.Now().UnixNano() }
