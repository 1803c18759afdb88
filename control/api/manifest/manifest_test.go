package manifest

import (
	"strings"
	"testing"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

func TestDecodeErrors(t *testing.T) {
	pod := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: hello\n"
	tests := []struct {
		name, in, want string
	}{
		{"unknown top-level field", pod + "extra: 1\n", "extra: unknown field"},
		{"unknown nested field", pod + "    stdinOnce: true\n", "spec.containers[0].stdinOnce: unknown field"},
		{"unknown metadata field", strings.Replace(pod, "  name: p\n", "  name: p\n  generateName: x\n", 1), "metadata.generateName: unknown field"},
		{"unparsable YAML names the file line", pod + "---\n" + "apiVersion: v1\nkind: Pod\nmetadata:\n  name: [p\n", "line 13"},
		{"tab indentation", "apiVersion: v1\nkind: Pod\nmetadata:\n\tname: p\n", "line 4"},
		{"string for a list", strings.Replace(pod, "image: hello\n", "image: hello\n    command: run\n", 1), "spec.containers[0].command: invalid type: want a list, got string \"run\""},
		{"list for a string", strings.Replace(pod, "image: hello", "image: [a]", 1), "spec.containers[0].image: invalid type: want a string"},
		{"fraction for a port", pod + "    readinessProbe:\n      tcpSocket: {port: 80.5}\n", "spec.containers[0].readinessProbe.tcpSocket.port: invalid type: want a string, got number 80.5"},
		{"no kind", "apiVersion: v1\nmetadata:\n  name: p\n", "kind: required value"},
		{"no apiVersion", "kind: Pod\nmetadata:\n  name: p\n", "apiVersion: required value"},
		{"wrong apiVersion", strings.Replace(pod, "apiVersion: v1", "apiVersion: apps/v1", 1), `apiVersion: unsupported value "apps/v1" for kind Pod`},
		{"unsupported kind", "apiVersion: apps/v1\nkind: StatefulSet\n", `kind: unsupported value "StatefulSet"`},
		{"not a mapping", "- a\n- b\n", "must be a mapping"},
		{"empty", "\n---\n", "no objects found"},
		{"error names the document", pod + "---\n" + pod + "bogus: true\n", "(document 2): bogus: unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode("f.yaml", []byte(tt.in))
			if err == nil {
				t.Fatalf("Decode succeeded, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "f.yaml") {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

// TestDecodeIntOrString: a probe's port is a number or a port name, as in
// Kubernetes.
func TestDecodeIntOrString(t *testing.T) {
	in := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: hello\n" +
		"    readinessProbe:\n      httpGet: {path: /, port: http}\n    livenessProbe:\n      tcpSocket: {port: 8080}\n"
	objs, err := Decode("f.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	c := objs[0].Msg.(*skiffv1.Pod).Spec.Containers[0]
	if got := c.ReadinessProbe.HttpGet.Port; got != "http" {
		t.Errorf("httpGet.port = %q, want %q", got, "http")
	}
	if got := c.LivenessProbe.TcpSocket.Port; got != "8080" {
		t.Errorf("tcpSocket.port = %q, want %q", got, "8080")
	}
}

func TestDecodePod(t *testing.T) {
	in := `# a comment
apiVersion: v1
kind: Pod
metadata:
  name: hello
  namespace: team
  labels: {app: hello}
spec:
  runtimeClassName: wasm
  restartPolicy: Never
  containers:
  - name: hello
    image: hello:v1
    command: [hello]
    args: ["--loud"]
    env:
    - {name: A, value: "1"}
---
apiVersion: v1
kind: Namespace
metadata:
  name: team
`
	objs, err := Decode("f.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("got %d objects, want 2", len(objs))
	}
	p, ok := objs[0].Msg.(*skiffv1.Pod)
	if !ok {
		t.Fatalf("first object is %T", objs[0].Msg)
	}
	c := p.Spec.Containers[0]
	if p.Metadata.Namespace != "team" || p.Metadata.Labels["app"] != "hello" || p.Spec.RestartPolicy != "Never" ||
		c.Image != "hello:v1" || c.Command[0] != "hello" || c.Args[0] != "--loud" || c.Env[0].Value != "1" {
		t.Errorf("decoded pod wrong: %v", p)
	}
	if objs[1].Kind.Kind != "Namespace" || objs[1].Source != "f.yaml (document 2)" {
		t.Errorf("second object: %v from %s", objs[1].Kind, objs[1].Source)
	}
	// Round trip through YAML.
	y, err := YAML(p)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Decode("again", y)
	if err != nil {
		t.Fatalf("decode own YAML: %v\n%s", err, y)
	}
	if again[0].Msg.(*skiffv1.Pod).Spec.Containers[0].Env[0].Name != "A" || !strings.HasPrefix(string(y), "apiVersion: v1\nkind: Pod\n") {
		t.Errorf("round trip lost data:\n%s", y)
	}
}
