package manifest

import (
	"testing"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// TestDecodeKubernetesDeployment: a Deployment written for Kubernetes,
// with an integer maxSurge and a percentage maxUnavailable, is read as
// written.
func TestDecodeKubernetesDeployment(t *testing.T) {
	in := `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
spec:
  replicas: 3
  revisionHistoryLimit: 5
  progressDeadlineSeconds: 120
  minReadySeconds: 2
  selector:
    matchLabels:
      app: web
    matchExpressions:
    - {key: tier, operator: In, values: [front]}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 25%
  template:
    metadata:
      labels:
        app: web
        tier: front
    spec:
      containers:
      - name: web
        image: hello.wasm
`
	objs, err := Decode("deploy.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	d := objs[0].Msg.(*skiffv1.Deployment)
	s := d.GetSpec()
	ru := s.GetStrategy().GetRollingUpdate()
	if s.GetReplicas() != 3 || s.GetRevisionHistoryLimit() != 5 || s.GetProgressDeadlineSeconds() != 120 || s.GetMinReadySeconds() != 2 ||
		ru.GetMaxSurge() != "1" || ru.GetMaxUnavailable() != "25%" ||
		s.GetSelector().GetMatchExpressions()[0].GetValues()[0] != "front" || s.GetTemplate().GetMetadata().GetLabels()["tier"] != "front" {
		t.Errorf("decoded %v", s)
	}
	rs := `apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web
spec:
  replicas: 0
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - {name: web, image: hello.wasm}
`
	objs, err = Decode("rs.yaml", []byte(rs))
	if err != nil {
		t.Fatal(err)
	}
	if r := objs[0].Msg.(*skiffv1.ReplicaSet); r.GetSpec().Replicas == nil || r.GetSpec().GetReplicas() != 0 {
		t.Errorf("replicas: 0 must be kept as set, got %v", r.GetSpec().Replicas)
	}
}

// TestDecodeKubectlGeneratedDeployment: what `kubectl create deployment
// --dry-run=client -o yaml` writes is read as is.
func TestDecodeKubectlGeneratedDeployment(t *testing.T) {
	in := `apiVersion: apps/v1
kind: Deployment
metadata:
  creationTimestamp: null
  labels:
    app: web
  name: web
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  strategy: {}
  template:
    metadata:
      creationTimestamp: null
      labels:
        app: web
    spec:
      containers:
      - image: hello
        name: hello
        resources: {}
status: {}
`
	objs, err := Decode("kubectl.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if d := objs[0].Msg.(*skiffv1.Deployment); d.GetSpec().GetTemplate().GetSpec().GetContainers()[0].GetImage() != "hello" {
		t.Errorf("decoded %v", d)
	}
}
