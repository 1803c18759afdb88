package cri

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/skiff/runtime/wasm/wasmtest"
)

// TestStats runs a spinning and a sleeping container in one pod: their
// stats are non-zero, the spinner's CPU time grows, and the pod's stats
// are the sums.
func TestStats(t *testing.T) {
	e := newEnv(t, false)
	e.importImage("spin", wasmtest.Build(wasmtest.Spin()))
	e.importImage("sleep", wasmtest.Build(wasmtest.Grow(15), wasmtest.Sleep(time.Hour)))
	pod := e.runPod("stats")
	spin := e.mustCreate(pod, containerConfig("spin", "spin"))
	sleep := e.mustCreate(pod, containerConfig("sleep", "sleep"))
	e.start(spin)
	e.start(sleep)
	ctx := context.Background()
	get := func(id string) *runtime.ContainerStats {
		t.Helper()
		resp, err := e.rs.ContainerStats(ctx, &runtime.ContainerStatsRequest{ContainerId: id})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Stats
	}
	first := get(spin)
	if first.GetAttributes().GetId() != spin || first.GetMemory().GetWorkingSetBytes().GetValue() != 64<<10 || first.GetCpu().GetTimestamp() == 0 {
		t.Errorf("spinner stats = %v; want its ID, one page of memory, a timestamp", first)
	}
	wasmtest.Eventually(t, 10*time.Second, func() bool {
		return get(spin).GetCpu().GetUsageCoreNanoSeconds().GetValue() > first.GetCpu().GetUsageCoreNanoSeconds().GetValue()+uint64(20*time.Millisecond)
	}, func() string { return "timed out waiting until the spinner's CPU time grows" })
	wasmtest.Eventually(t, 10*time.Second, func() bool { return get(sleep).GetMemory().GetWorkingSetBytes().GetValue() == 16<<16 }, func() string { return "timed out waiting until the sleeper has grown its memory" })

	list, err := e.rs.ListContainerStats(ctx, &runtime.ListContainerStatsRequest{Filter: &runtime.ContainerStatsFilter{PodSandboxId: pod}})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Stats) != 2 || list.Stats[0].GetAttributes().GetId() != spin || list.Stats[1].GetAttributes().GetId() != sleep {
		t.Fatalf("ListContainerStats = %v, want the spinner then the sleeper", list.Stats)
	}
	byLabel, err := e.rs.ListContainerStats(ctx, &runtime.ListContainerStatsRequest{Filter: &runtime.ContainerStatsFilter{LabelSelector: map[string]string{"container": "sleep"}}})
	if err != nil || len(byLabel.Stats) != 1 || byLabel.Stats[0].GetAttributes().GetId() != sleep {
		t.Errorf("ListContainerStats by label = %v, %v; want the sleeper", byLabel.GetStats(), err)
	}

	resp, err := e.rs.PodSandboxStats(ctx, &runtime.PodSandboxStatsRequest{PodSandboxId: pod})
	if err != nil {
		t.Fatal(err)
	}
	ps := resp.Stats
	var cpus uint64
	for _, c := range ps.GetLinux().GetContainers() {
		cpus += c.GetCpu().GetUsageCoreNanoSeconds().GetValue()
	}
	if ps.GetAttributes().GetId() != pod || len(ps.GetLinux().GetContainers()) != 2 ||
		ps.GetLinux().GetCpu().GetUsageCoreNanoSeconds().GetValue() != cpus || cpus == 0 ||
		ps.GetLinux().GetMemory().GetWorkingSetBytes().GetValue() != 64<<10+16<<16 {
		t.Errorf("PodSandboxStats = %v; want the sums of its two containers", ps)
	}
	all, err := e.rs.ListPodSandboxStats(ctx, &runtime.ListPodSandboxStatsRequest{})
	if err != nil || len(all.Stats) != 1 || all.Stats[0].GetAttributes().GetId() != pod {
		t.Errorf("ListPodSandboxStats = %v, %v", all.GetStats(), err)
	}
	if _, err := e.rs.ContainerStats(ctx, &runtime.ContainerStatsRequest{ContainerId: "nope"}); err == nil {
		t.Error("ContainerStats of an unknown container succeeded")
	}
}

// TestResourceLimits checks what a CRI client sees of the limits: a memory
// bomb under a 64 MiB limit ends OOMKilled, a loop past its CPU budget
// annotation ends CPUBudgetExceeded, and bad values are refused by name.
func TestResourceLimits(t *testing.T) {
	e := newEnv(t, false)
	e.importImage("bomb", wasmtest.Build(wasmtest.GrowBomb()))
	e.importImage("spin", wasmtest.Build(wasmtest.Spin()))
	pod := e.runPod("limits")

	bomb := containerConfig("bomb", "bomb")
	bomb.Linux = &runtime.LinuxContainerConfig{Resources: &runtime.LinuxContainerResources{MemoryLimitInBytes: 64 << 20}}
	id := e.mustCreate(pod, bomb)
	e.start(id)
	st := e.waitState(id, runtime.ContainerState_CONTAINER_EXITED)
	if st.ExitCode != 137 || st.Reason != "OOMKilled" || !strings.Contains(st.Message, "memory limit of 64Mi") {
		t.Errorf("bomb status = %d %q %q; want 137 OOMKilled naming the limit", st.ExitCode, st.Reason, st.Message)
	}

	spin := containerConfig("spin", "spin")
	spin.Annotations = map[string]string{AnnotationCPUTimeBudget: "200ms"}
	id = e.mustCreate(pod, spin)
	e.start(id)
	st = e.waitState(id, runtime.ContainerState_CONTAINER_EXITED)
	if st.ExitCode != 137 || st.Reason != "CPUBudgetExceeded" || !strings.Contains(st.Message, "CPU budget of 200ms used up") {
		t.Errorf("spinner status = %d %q %q; want 137 CPUBudgetExceeded naming the budget", st.ExitCode, st.Reason, st.Message)
	}

	bad := containerConfig("bad", "spin")
	bad.Annotations = map[string]string{AnnotationCPUTimeBudget: "lots"}
	_, err := e.create(pod, bad)
	wantCode(t, err, codes.InvalidArgument, AnnotationCPUTimeBudget, `"lots"`)
	bad = containerConfig("bad", "spin")
	bad.Linux = &runtime.LinuxContainerConfig{Resources: &runtime.LinuxContainerResources{MemoryLimitInBytes: 100}}
	_, err = e.create(pod, bad)
	wantCode(t, err, codes.InvalidArgument, "memory_limit_in_bytes 100")
	bad.Linux.Resources = &runtime.LinuxContainerResources{CpuQuota: 500}
	_, err = e.create(pod, bad)
	wantCode(t, err, codes.InvalidArgument, "cpu_quota 500")
	bad.Linux.Resources = &runtime.LinuxContainerResources{CpuQuota: 50000, CpuPeriod: 10}
	_, err = e.create(pod, bad)
	wantCode(t, err, codes.InvalidArgument, "cpu_period 10")
}

// TestCPUQuota: a spinning container with a CFS quota of 20ms per 100ms,
// as the kubelet writes limits.cpu: 200m, uses about a fifth of a core by
// its CRI stats.
func TestCPUQuota(t *testing.T) {
	e := newEnv(t, false)
	if err := e.wasm.CPULimits(); err != nil {
		t.Skip(err)
	}
	e.importImage("spin", wasmtest.Build(wasmtest.Spin()))
	pod := e.runPod("quota")
	spin := containerConfig("spin", "spin")
	spin.Linux = &runtime.LinuxContainerConfig{Resources: &runtime.LinuxContainerResources{CpuQuota: 20000, CpuPeriod: 100000}}
	id := e.mustCreate(pod, spin)
	e.start(id)
	cpu := func() (uint64, time.Time) {
		st, err := e.rs.ContainerStats(context.Background(), &runtime.ContainerStatsRequest{ContainerId: id})
		if err != nil {
			t.Fatal(err)
		}
		return st.Stats.Cpu.UsageCoreNanoSeconds.GetValue(), time.Now()
	}
	c0, t0 := cpu()
	time.Sleep(time.Second) // a window to measure, not a wait for a condition
	c1, t1 := cpu()
	share := float64(c1-c0) / float64(t1.Sub(t0))
	t.Logf("%.2f of a core", share)
	if share == 0 || share > 0.35 { // below the quota: only a loaded machine
		t.Errorf("the container used %.2f of a core under a quota of 0.2", share)
	}
}
