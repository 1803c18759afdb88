package controllers

import (
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/kinds"
)

func testDeployment(replicas int32, surge, unavail string) *skiffv1.Deployment {
	labels := map[string]string{"app": "web"}
	return &skiffv1.Deployment{
		Metadata: &skiffv1.ObjectMeta{Name: "web", Namespace: "default", Uid: "d-uid", Generation: 2},
		Spec: &skiffv1.DeploymentSpec{
			Replicas: proto.Int32(replicas),
			Selector: &skiffv1.LabelSelector{MatchLabels: labels},
			Template: &skiffv1.PodTemplateSpec{Metadata: &skiffv1.ObjectMeta{Labels: labels}, Spec: &skiffv1.PodSpec{Containers: []*skiffv1.Container{{Name: "a", Image: "v2"}}}},
			Strategy: &skiffv1.DeploymentStrategy{Type: "RollingUpdate", RollingUpdate: &skiffv1.RollingUpdateDeployment{MaxSurge: surge, MaxUnavailable: unavail}},
		},
	}
}

// testRS is a ReplicaSet at spec replicas with available pods, of revision rev.
func testRS(name string, rev int, replicas, available int32) *skiffv1.ReplicaSet {
	return &skiffv1.ReplicaSet{
		Metadata: &skiffv1.ObjectMeta{Name: name, Annotations: map[string]string{kinds.RevisionAnnotation: strconv.Itoa(rev)}, CreationTimestamp: timestamppb.New(t0.Add(time.Duration(rev) * time.Second))},
		Spec:     &skiffv1.ReplicaSetSpec{Replicas: proto.Int32(replicas)},
		Status:   &skiffv1.ReplicaSetStatus{Replicas: available, AvailableReplicas: available, ReadyReplicas: available},
	}
}

func TestRollingScale(t *testing.T) {
	tests := []struct {
		name        string
		replicas    int32
		surge, unav string
		newRS       *skiffv1.ReplicaSet
		olds        []*skiffv1.ReplicaSet
		wantNew     int32
		wantOld     []int32
	}{
		{"first step: surge and drop maxUnavailable", 10, "3", "2", testRS("new", 2, 0, 0), []*skiffv1.ReplicaSet{testRS("old", 1, 10, 10)}, 3, []int32{8}},
		{"new pods not yet available: wait", 10, "3", "2", testRS("new", 2, 5, 0), []*skiffv1.ReplicaSet{testRS("old", 1, 8, 8)}, 5, []int32{8}},
		{"three new available: three old go", 10, "3", "2", testRS("new", 2, 5, 3), []*skiffv1.ReplicaSet{testRS("old", 1, 8, 8)}, 5, []int32{5}},
		{"old status lags its scale-down", 10, "3", "2", testRS("new", 2, 5, 0), []*skiffv1.ReplicaSet{testRS("old", 1, 8, 10)}, 5, []int32{8}},
		{"unhealthy old pods go first", 4, "0", "1", testRS("new", 2, 0, 0), []*skiffv1.ReplicaSet{testRS("old", 1, 4, 2)}, 0, []int32{3}},
		{"percentages: surge rounds up, unavailable down", 10, "25%", "25%", testRS("new", 2, 0, 0), []*skiffv1.ReplicaSet{testRS("old", 1, 10, 10)}, 3, []int32{8}},
		{"scale down the new one", 3, "1", "1", testRS("new", 2, 5, 5), nil, 3, []int32{}},
		{"oldest goes first", 4, "0", "2", testRS("new", 3, 0, 0), []*skiffv1.ReplicaSet{testRS("older", 1, 2, 2), testRS("old", 2, 2, 2)}, 0, []int32{0, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotNew, gotOld := rollingScale(testDeployment(tt.replicas, tt.surge, tt.unav), tt.newRS, tt.olds)
			if gotNew != tt.wantNew || len(gotOld) != len(tt.wantOld) {
				t.Fatalf("new %d, old %v; want %d, %v", gotNew, gotOld, tt.wantNew, tt.wantOld)
			}
			for i := range gotOld {
				if gotOld[i] != tt.wantOld[i] {
					t.Fatalf("new %d, old %v; want %d, %v", gotNew, gotOld, tt.wantNew, tt.wantOld)
				}
			}
		})
	}
}

func TestPlanDeployment(t *testing.T) {
	d := testDeployment(3, "1", "0")
	now := t0.Add(time.Hour)
	// No ReplicaSet yet: one is created at revision 1, at full scale.
	p := planDeployment(d, nil, false, now)
	if p.create == nil || p.create.GetSpec().GetReplicas() != 3 || revision(p.create.GetMetadata()) != 1 || p.revision != "1" {
		t.Fatalf("first plan: %+v", p)
	}
	rs := p.create
	hash := rs.GetMetadata().GetLabels()[kinds.PodTemplateHashLabel]
	if rs.GetMetadata().GetName() != "web-"+hash || rs.GetSpec().GetSelector().GetMatchLabels()[kinds.PodTemplateHashLabel] != hash ||
		rs.GetSpec().GetTemplate().GetMetadata().GetLabels()[kinds.PodTemplateHashLabel] != hash || controllerOf(rs.GetMetadata()).GetUid() != "d-uid" {
		t.Errorf("new replicaset: %v", rs)
	}
	if templateHash(d.GetSpec().GetTemplate()) != hash {
		t.Errorf("hash is not stable")
	}
	// Its pods available: complete.
	rs.Status = &skiffv1.ReplicaSetStatus{Replicas: 3, ReadyReplicas: 3, AvailableReplicas: 3, ObservedGeneration: 1}
	rs.Metadata.Generation = 1
	d.Metadata.Annotations = map[string]string{kinds.RevisionAnnotation: "1"}
	p = planDeployment(d, []*skiffv1.ReplicaSet{rs}, false, now)
	if p.create != nil || len(p.update) != 0 || p.revision != "" {
		t.Errorf("a finished rollout changes nothing: %+v", p)
	}
	if c := findCondition(p.status.GetConditions(), condProgressing); c.GetReason() != reasonNewRSAvailable || p.status.GetUpdatedReplicas() != 3 || p.status.GetAvailableReplicas() != 3 {
		t.Errorf("status of a finished rollout: %v", p.status)
	}
	// A new template: a second ReplicaSet, revision 2, surging by one.
	d2 := proto.Clone(d).(*skiffv1.Deployment)
	d2.Spec.Template.Spec.Containers[0].Image = "v3"
	p = planDeployment(d2, []*skiffv1.ReplicaSet{rs}, true, now)
	if p.create == nil || revision(p.create.GetMetadata()) != 2 || p.create.GetSpec().GetReplicas() != 1 || len(p.update) != 0 || p.revision != "2" {
		t.Errorf("plan of a template change: create %v, update %v, revision %q", p.create, p.update, p.revision)
	}
	// Undo: the old template's ReplicaSet comes back as revision 3.
	newer := p.create
	newer.Status = &skiffv1.ReplicaSetStatus{}
	rs.Spec.Replicas = proto.Int32(0)
	p = planDeployment(d, []*skiffv1.ReplicaSet{rs, newer}, false, now)
	// The newer one has nothing available: it goes at once, and the old
	// template's comes back whole.
	if p.create != nil || len(p.update) != 2 || p.update[0].GetMetadata().GetName() != rs.GetMetadata().GetName() ||
		revision(p.update[0].GetMetadata()) != 3 || p.update[0].GetSpec().GetReplicas() != 3 || p.update[1].GetSpec().GetReplicas() != 0 || p.revision != "3" {
		t.Errorf("plan of an undo: create %v, update %v, revision %q", p.create, p.update, p.revision)
	}
	// Recreate: old ones to zero first, the new one only when their pods are gone.
	rc := proto.Clone(d2).(*skiffv1.Deployment)
	rc.Spec.Strategy = &skiffv1.DeploymentStrategy{Type: "Recreate"}
	rs.Spec.Replicas = proto.Int32(3)
	p = planDeployment(rc, []*skiffv1.ReplicaSet{rs}, true, now)
	if p.create == nil || p.create.GetSpec().GetReplicas() != 0 || len(p.update) != 1 || p.update[0].GetSpec().GetReplicas() != 0 {
		t.Errorf("recreate, first step: create %v, update %v", p.create, p.update)
	}
	rs.Spec.Replicas = proto.Int32(0)
	newRS := p.create
	p = planDeployment(rc, []*skiffv1.ReplicaSet{rs, newRS}, true, now)
	if len(p.update) != 0 {
		t.Errorf("recreate scaled up while old pods exist: %v", p.update)
	}
	p = planDeployment(rc, []*skiffv1.ReplicaSet{rs, newRS}, false, now)
	if len(p.update) != 1 || p.update[0].GetSpec().GetReplicas() != 3 {
		t.Errorf("recreate, old pods gone: %v", p.update)
	}
}

func TestPruneHistory(t *testing.T) {
	d := testDeployment(1, "1", "0")
	d.Spec.RevisionHistoryLimit = proto.Int32(1)
	olds := []*skiffv1.ReplicaSet{testRS("r1", 1, 0, 0), testRS("r2", 2, 0, 0), testRS("r3", 3, 1, 1)}
	got := pruneHistory(d, olds)
	if len(got) != 1 || got[0].GetMetadata().GetName() != "r1" {
		t.Errorf("pruned %v, want r1 (r2 is kept, r3 still has pods)", got)
	}
}

func TestProgressDeadline(t *testing.T) {
	d := testDeployment(2, "1", "0")
	d.Spec.ProgressDeadlineSeconds = proto.Int32(60)
	newRS := testRS("new", 1, 2, 0)
	last := timestamppb.New(t0)
	d.Status = &skiffv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 0, Conditions: []*skiffv1.Condition{
		{Type: condProgressing, Status: "True", Reason: reasonRSUpdated, LastHeartbeatTime: last, LastTransitionTime: last},
	}}
	st, recheck := deploymentStatus(d, newRS, nil, false, false, t0.Add(30*time.Second))
	if c := findCondition(st.GetConditions(), condProgressing); c.GetReason() != reasonRSUpdated || recheck != 30*time.Second {
		t.Errorf("before the deadline: %v, recheck %v", c, recheck)
	}
	st, _ = deploymentStatus(d, newRS, nil, false, false, t0.Add(61*time.Second))
	if c := findCondition(st.GetConditions(), condProgressing); c.GetStatus() != "False" || c.GetReason() != reasonDeadlineExceeded {
		t.Errorf("past the deadline: %v", c)
	}
	if c := findCondition(st.GetConditions(), condAvailable); c.GetStatus() != "False" {
		t.Errorf("available with no pods: %v", c)
	}
}
