package apiserver

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

func appsClients(t *testing.T) (skiffv1connect.DeploymentServiceClient, skiffv1connect.ReplicaSetServiceClient) {
	t.Helper()
	srv := httptest.NewServer(realServer(t).Handler())
	t.Cleanup(srv.Close)
	return skiffv1connect.NewDeploymentServiceClient(srv.Client(), srv.URL), skiffv1connect.NewReplicaSetServiceClient(srv.Client(), srv.URL)
}

func deployment(name string) *skiffv1.Deployment {
	labels := map[string]string{"app": name}
	return &skiffv1.Deployment{
		Metadata: &skiffv1.ObjectMeta{Name: name},
		Spec: &skiffv1.DeploymentSpec{
			Selector: &skiffv1.LabelSelector{MatchLabels: labels},
			Template: &skiffv1.PodTemplateSpec{
				Metadata: &skiffv1.ObjectMeta{Labels: labels},
				Spec:     &skiffv1.PodSpec{Containers: []*skiffv1.Container{{Name: "app", Image: "hello.wasm"}}},
			},
		},
	}
}

func TestDeploymentDefaultsAndGeneration(t *testing.T) {
	deploys, _ := appsClients(t)
	ctx := context.Background()
	res, err := deploys.Create(ctx, connect.NewRequest(deployment("web")))
	if err != nil {
		t.Fatal(err)
	}
	d := res.Msg
	s := d.GetSpec()
	if s.GetReplicas() != 1 || s.GetStrategy().GetType() != "RollingUpdate" ||
		s.GetStrategy().GetRollingUpdate().GetMaxSurge() != "25%" || s.GetStrategy().GetRollingUpdate().GetMaxUnavailable() != "25%" ||
		s.GetRevisionHistoryLimit() != 10 || s.GetProgressDeadlineSeconds() != 600 ||
		s.GetTemplate().GetSpec().GetRestartPolicy() != "Always" {
		t.Errorf("defaults: got %v", s)
	}
	if d.GetMetadata().GetGeneration() != 1 {
		t.Errorf("generation on create = %d, want 1", d.GetMetadata().GetGeneration())
	}
	// A metadata change keeps the generation; a spec change bumps it.
	d.Metadata.Labels = map[string]string{"team": "a"}
	res, err = deploys.Update(ctx, connect.NewRequest(d))
	if err != nil {
		t.Fatal(err)
	}
	if g := res.Msg.GetMetadata().GetGeneration(); g != 1 {
		t.Errorf("generation after a label change = %d, want 1", g)
	}
	d = res.Msg
	d.Spec.Replicas = proto.Int32(3)
	res, err = deploys.Update(ctx, connect.NewRequest(d))
	if err != nil {
		t.Fatal(err)
	}
	if g := res.Msg.GetMetadata().GetGeneration(); g != 2 {
		t.Errorf("generation after a spec change = %d, want 2", g)
	}
	// UpdateStatus changes the status alone.
	d = res.Msg
	d.Spec.Replicas = proto.Int32(7)
	d.Status = &skiffv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 3}
	res, err = deploys.UpdateStatus(ctx, connect.NewRequest(d))
	if err != nil {
		t.Fatal(err)
	}
	if res.Msg.GetSpec().GetReplicas() != 3 || res.Msg.GetStatus().GetObservedGeneration() != 2 || res.Msg.GetMetadata().GetGeneration() != 2 {
		t.Errorf("after UpdateStatus: replicas %d, status %v, generation %d", res.Msg.GetSpec().GetReplicas(), res.Msg.GetStatus(), res.Msg.GetMetadata().GetGeneration())
	}
	// A spec update keeps the status.
	d = res.Msg
	d.Status = nil
	res, err = deploys.Update(ctx, connect.NewRequest(d))
	if err != nil {
		t.Fatal(err)
	}
	if res.Msg.GetStatus().GetReplicas() != 3 {
		t.Errorf("update dropped the status: %v", res.Msg.GetStatus())
	}
	// The selector is immutable.
	d = res.Msg
	d.Spec.Selector = &skiffv1.LabelSelector{MatchLabels: map[string]string{"app": "web", "x": "y"}}
	d.Spec.Template.Metadata.Labels["x"] = "y"
	_, err = deploys.Update(ctx, connect.NewRequest(d))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "spec.selector") || !strings.Contains(err.Error(), "immutable") {
		t.Errorf("selector change: got %v", err)
	}
}

func TestDeploymentValidation(t *testing.T) {
	deploys, rss := appsClients(t)
	ctx := context.Background()
	cases := []struct {
		name   string
		change func(d *skiffv1.Deployment)
		want   string
	}{
		{"no selector", func(d *skiffv1.Deployment) { d.Spec.Selector = nil }, "spec.selector: required value"},
		{"empty selector", func(d *skiffv1.Deployment) { d.Spec.Selector = &skiffv1.LabelSelector{} }, "spec.selector: invalid value: empty selector"},
		{"selector value", func(d *skiffv1.Deployment) {
			d.Spec.Selector.MatchExpressions = []*skiffv1.LabelSelectorRequirement{{Key: "tier", Operator: "In", Values: []string{"not a value"}}}
		}, "spec.selector.matchExpressions[0].values[0]: invalid value \"not a value\""},
		{"selector not matching", func(d *skiffv1.Deployment) { d.Spec.Selector.MatchLabels = map[string]string{"app": "other"} }, "spec.template.metadata.labels: invalid value \"app=x\": `selector` does not match template `labels`"},
		{"negative replicas", func(d *skiffv1.Deployment) { d.Spec.Replicas = proto.Int32(-1) }, "spec.replicas: invalid value -1"},
		{"strategy type", func(d *skiffv1.Deployment) { d.Spec.Strategy = &skiffv1.DeploymentStrategy{Type: "BlueGreen"} }, "spec.strategy.type: unsupported value \"BlueGreen\""},
		{"bad surge", func(d *skiffv1.Deployment) {
			d.Spec.Strategy = &skiffv1.DeploymentStrategy{RollingUpdate: &skiffv1.RollingUpdateDeployment{MaxSurge: "-1"}}
		}, "spec.strategy.rollingUpdate.maxSurge: invalid value \"-1\""},
		{"bad unavailable percent", func(d *skiffv1.Deployment) {
			d.Spec.Strategy = &skiffv1.DeploymentStrategy{RollingUpdate: &skiffv1.RollingUpdateDeployment{MaxUnavailable: "abc%"}}
		}, "spec.strategy.rollingUpdate.maxUnavailable: invalid value \"abc%\""},
		{"both zero", func(d *skiffv1.Deployment) {
			d.Spec.Strategy = &skiffv1.DeploymentStrategy{RollingUpdate: &skiffv1.RollingUpdateDeployment{MaxSurge: "0", MaxUnavailable: "0%"}}
		}, "spec.strategy.rollingUpdate.maxUnavailable: invalid value \"0%\": may not be 0 when maxSurge is 0"},
		{"recreate with rolling update", func(d *skiffv1.Deployment) {
			d.Spec.Strategy = &skiffv1.DeploymentStrategy{Type: "Recreate", RollingUpdate: &skiffv1.RollingUpdateDeployment{MaxSurge: "1"}}
		}, "spec.strategy.rollingUpdate: forbidden"},
		{"template restart policy", func(d *skiffv1.Deployment) { d.Spec.Template.Spec.RestartPolicy = "Never" }, "spec.template.spec.restartPolicy: unsupported value \"Never\": only \"Always\""},
		{"template container", func(d *skiffv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "" }, "spec.template.spec.containers[0].image: required value"},
		{"template label", func(d *skiffv1.Deployment) { d.Spec.Template.Metadata.Labels["bad key!"] = "v" }, "spec.template.metadata.labels: invalid key \"bad key!\""},
		{"no template", func(d *skiffv1.Deployment) { d.Spec.Template = nil }, "spec.template: required value"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := deployment("x")
			tc.change(d)
			_, err := deploys.Create(ctx, connect.NewRequest(d))
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want InvalidArgument with %q", err, tc.want)
			}
		})
	}
	// A ReplicaSet is checked the same way.
	d := deployment("rs")
	rs := &skiffv1.ReplicaSet{Metadata: d.Metadata, Spec: &skiffv1.ReplicaSetSpec{Selector: d.Spec.Selector, Template: d.Spec.Template, Replicas: proto.Int32(-2)}}
	_, err := rss.Create(ctx, connect.NewRequest(rs))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "spec.replicas: invalid value -2") {
		t.Errorf("replicaset with negative replicas: got %v", err)
	}
	rs.Spec.Replicas = nil
	res, err := rss.Create(ctx, connect.NewRequest(rs))
	if err != nil {
		t.Fatal(err)
	}
	if res.Msg.GetSpec().GetReplicas() != 1 || res.Msg.GetMetadata().GetGeneration() != 1 {
		t.Errorf("replicaset defaults: replicas %d, generation %d", res.Msg.GetSpec().GetReplicas(), res.Msg.GetMetadata().GetGeneration())
	}
}
