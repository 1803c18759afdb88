package manifest

import (
	"testing"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// TestDecodeKubernetesService: a Service written for Kubernetes, with its
// field names (clusterIP) and an integer targetPort, is read as written.
func TestDecodeKubernetesService(t *testing.T) {
	in := `apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 8080
    nodePort: 30080
    protocol: TCP
`
	objs, err := Decode("svc.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	s := objs[0].Msg.(*skiffv1.Service)
	if s.Spec.ClusterIp != "10.96.0.10" || len(s.Spec.ClusterIps) != 1 || s.Spec.Ports[0].TargetPort != "8080" || s.Spec.Ports[0].NodePort != 30080 {
		t.Errorf("decoded %v", s.Spec)
	}
}
