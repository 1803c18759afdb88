package agent

import (
	"strings"
	"testing"
	"time"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

func running() *skiffv1.ContainerState {
	return &skiffv1.ContainerState{Running: &skiffv1.ContainerStateRunning{}}
}

// TestPodPhase checks the kubelet's phase rules on the worker's view.
func TestPodPhase(t *testing.T) {
	tests := []struct {
		name       string
		containers map[string]*containerRun
		want       string
		wantReady  string
	}{
		{"nothing yet", nil, "Pending", "False"},
		{"one creating", map[string]*containerRun{"a": {state: waiting("ContainerCreating", "")}}, "Pending", "False"},
		{"image missing", map[string]*containerRun{"a": {state: waiting("ErrImagePull", "x")}, "b": {state: running()}}, "Pending", "False"},
		{"all running", map[string]*containerRun{"a": {state: running()}, "b": {state: running()}}, "Running", "True"},
		{"one exited one running", map[string]*containerRun{"a": {state: terminated(0, "Completed", "")}, "b": {state: running()}}, "Running", "False"},
		{"all exited zero", map[string]*containerRun{"a": {state: terminated(0, "Completed", "")}, "b": {state: terminated(0, "Completed", "")}}, "Succeeded", "False"},
		{"one exited non-zero", map[string]*containerRun{"a": {state: terminated(0, "Completed", "")}, "b": {state: terminated(2, "Error", "")}}, "Failed", "False"},
		{"waiting to restart", map[string]*containerRun{"a": {state: waiting("CrashLoopBackOff", ""), last: terminated(1, "Error", "")}, "b": {state: running()}}, "Running", "False"},
		{"cannot run", map[string]*containerRun{"a": {failed: true, state: terminated(128, "CreateContainerError", "bad module")}, "b": {state: running()}}, "Running", "False"},
		{"cannot run, other done", map[string]*containerRun{"a": {failed: true, state: terminated(128, "CreateContainerError", "bad module")}, "b": {state: terminated(0, "Completed", "")}}, "Failed", "False"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &podWorker{
				a:          &Agent{},
				pod:        &skiffv1.Pod{Spec: &skiffv1.PodSpec{Containers: []*skiffv1.Container{{Name: "a"}, {Name: "b"}}}},
				containers: tt.containers,
			}
			if w.containers == nil {
				w.containers = map[string]*containerRun{}
			}
			st := w.status()
			if st.Phase != tt.want {
				t.Errorf("phase %s, want %s", st.Phase, tt.want)
			}
			for _, c := range st.Conditions {
				if c.Type == "Ready" && c.Status != tt.wantReady {
					t.Errorf("Ready %s, want %s", c.Status, tt.wantReady)
				}
			}
		})
	}
}

func TestMergeStatusKeepsSchedulerCondition(t *testing.T) {
	old := &skiffv1.PodStatus{Phase: "Pending", Conditions: []*skiffv1.Condition{{Type: "PodScheduled", Status: "True"}, {Type: "Ready", Status: "False", Reason: "x"}}}
	mine := &skiffv1.PodStatus{Phase: "Running", Conditions: []*skiffv1.Condition{{Type: "Ready", Status: "True"}}}
	got := mergeStatus(old, mine, time.Now())
	if got.Phase != "Running" || len(got.Conditions) != 2 {
		t.Fatalf("merged %v", got)
	}
	types := map[string]string{}
	for _, c := range got.Conditions {
		types[c.Type] = c.Status
		if c.Type == "Ready" && c.LastTransitionTime == nil {
			t.Errorf("Ready changed but has no transition time")
		}
	}
	if types["PodScheduled"] != "True" || types["Ready"] != "True" {
		t.Errorf("conditions %v", types)
	}
}

// TestPodStatusIPs: the pod reports its sandbox's IPs, primary first, and
// its node's InternalIP, and a merge with the stored status keeps them.
func TestPodStatusIPs(t *testing.T) {
	w := &podWorker{
		a:          &Agent{cfg: Config{NodeIP: "192.0.2.10"}},
		pod:        &skiffv1.Pod{Spec: &skiffv1.PodSpec{Containers: []*skiffv1.Container{{Name: "a"}}}},
		containers: map[string]*containerRun{"a": {state: running()}},
		podIPs:     []string{"10.244.1.7", "fd00::7"},
	}
	st := mergeStatus(&skiffv1.PodStatus{Phase: "Pending"}, w.status(), time.Now())
	if st.GetPodIp() != "10.244.1.7" || st.GetHostIp() != "192.0.2.10" {
		t.Errorf("podIP %q hostIP %q, want 10.244.1.7 and 192.0.2.10", st.GetPodIp(), st.GetHostIp())
	}
	var ips []string
	for _, ip := range st.GetPodIps() {
		ips = append(ips, ip.GetIp())
	}
	if strings.Join(ips, ",") != "10.244.1.7,fd00::7" {
		t.Errorf("podIPs %v, want [10.244.1.7 fd00::7]", ips)
	}
}
