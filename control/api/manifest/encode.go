package manifest

import (
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"skiff.dev/skiff/control/api/kinds"
)

// JSON renders an object as a Kubernetes-style document with apiVersion and
// kind first.
func JSON(m proto.Message) ([]byte, error) {
	body, err := protojson.MarshalOptions{UseProtoNames: false}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode object: %w", err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, err
	}
	k, ok := kinds.Of(m)
	if !ok {
		return nil, fmt.Errorf("encode object: %s is not a manifest kind", m.ProtoReflect().Descriptor().FullName())
	}
	type head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	h, _ := json.Marshal(head{k.APIVersion(), k.Kind})
	var out map[string]json.RawMessage
	_ = json.Unmarshal(h, &out)
	for key, v := range fields {
		out[key] = v
	}
	return json.MarshalIndent(out, "", "  ")
}

// YAML renders an object as a Kubernetes-style YAML document.
func YAML(m proto.Message) ([]byte, error) {
	js, err := JSON(m)
	if err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(js)
}

// ListJSON renders objects as one Kubernetes-style List document, as
// kubectl prints a list: {"apiVersion":"v1","kind":"List","items":[...]}.
func ListJSON(items []proto.Message) ([]byte, error) {
	raw := make([]json.RawMessage, 0, len(items))
	for _, m := range items {
		b, err := JSON(m)
		if err != nil {
			return nil, err
		}
		raw = append(raw, b)
	}
	return json.MarshalIndent(struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Items      []json.RawMessage `json:"items"`
		Metadata   map[string]string `json:"metadata"`
	}{"v1", "List", raw, map[string]string{"resourceVersion": ""}}, "", "  ")
}

// ListYAML renders objects as one List document in YAML.
func ListYAML(items []proto.Message) ([]byte, error) {
	js, err := ListJSON(items)
	if err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(js)
}
