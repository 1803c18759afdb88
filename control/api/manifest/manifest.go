// Package manifest reads Kubernetes-style YAML manifests into skiff's API
// objects and writes objects back out as YAML or JSON.
//
// A field skiff does not support is an error that names it by its path
// (spec.containers[0].ports), never silently dropped, and so is a value of
// the wrong type. YAML that does not parse is an error naming its line in
// the file.
package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// Kind describes one kind a manifest may hold.
type Kind struct {
	APIVersion string
	Kind       string
	Namespaced bool
	New        func() proto.Message
}

// Kinds are the kinds skiff accepts in manifests, by their manifest name.
var Kinds = map[string]Kind{
	"Pod":       {APIVersion: "v1", Kind: "Pod", Namespaced: true, New: func() proto.Message { return &skiffv1.Pod{} }},
	"Namespace": {APIVersion: "v1", Kind: "Namespace", New: func() proto.Message { return &skiffv1.Namespace{} }},
	"Node":      {APIVersion: "v1", Kind: "Node", New: func() proto.Message { return &skiffv1.Node{} }},
}

// KindOf returns the manifest kind of an API object.
func KindOf(m proto.Message) (Kind, bool) {
	name := string(m.ProtoReflect().Descriptor().Name())
	k, ok := Kinds[name]
	return k, ok
}

// Object is one decoded document of a manifest file.
type Object struct {
	Kind Kind
	Msg  proto.Message
	// Source names where it came from: "hello.yaml", "hello.yaml (document 2)".
	Source string
}

// Decode reads every document of a YAML (or JSON) stream. It returns either
// all of them or the first error, so that nothing is applied from a file
// that is partly wrong.
func Decode(source string, data []byte) ([]Object, error) {
	var out []Object
	docs := splitDocuments(data)
	for i, d := range docs {
		src := source
		if len(docs) > 1 {
			src = fmt.Sprintf("%s (document %d)", source, i+1)
		}
		obj, err := decodeDocument(d.text, d.line)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		if obj == nil {
			continue // an empty document
		}
		obj.Source = src
		out = append(out, *obj)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no objects found", source)
	}
	return out, nil
}

type document struct {
	text []byte
	line int // line of the file the document starts on, from 1
}

// splitDocuments cuts a YAML stream at its "---" lines.
func splitDocuments(data []byte) []document {
	var docs []document
	lines := bytes.SplitAfter(data, []byte("\n"))
	cur, start := []byte{}, 1
	for i, l := range lines {
		trimmed := bytes.TrimRight(l, " \t\r\n")
		if bytes.Equal(trimmed, []byte("---")) || bytes.HasPrefix(trimmed, []byte("--- ")) {
			docs = append(docs, document{text: cur, line: start})
			cur, start = []byte{}, i+2
			continue
		}
		cur = append(cur, l...)
	}
	return append(docs, document{text: cur, line: start})
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

func decodeDocument(text []byte, firstLine int) (*Object, error) {
	js, err := yaml.YAMLToJSON(text)
	if err != nil {
		// Make the line numbers count from the top of the file.
		msg := yamlLine.ReplaceAllStringFunc(err.Error(), func(s string) string {
			n, _ := strconv.Atoi(strings.TrimPrefix(s, "line "))
			return fmt.Sprintf("line %d", n+firstLine-1)
		})
		return nil, fmt.Errorf("invalid YAML: %s", strings.TrimPrefix(msg, "error converting YAML to JSON: "))
	}
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return nil, nil
	}
	var doc map[string]any
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, fmt.Errorf("a manifest must be a mapping with apiVersion, kind, metadata and spec (line %d)", firstLine)
	}
	kindName, _ := doc["kind"].(string)
	apiVersion, _ := doc["apiVersion"].(string)
	if kindName == "" {
		return nil, errors.New("kind: required value")
	}
	if apiVersion == "" {
		return nil, errors.New("apiVersion: required value")
	}
	k, ok := Kinds[kindName]
	if !ok {
		return nil, fmt.Errorf("kind: unsupported value %q: skiff accepts %s", kindName, supportedKinds())
	}
	if apiVersion != k.APIVersion {
		return nil, fmt.Errorf("apiVersion: unsupported value %q for kind %s: use %q", apiVersion, kindName, k.APIVersion)
	}
	delete(doc, "kind")
	delete(doc, "apiVersion")
	msg := k.New()
	if err := check(msg.ProtoReflect().Descriptor(), doc, ""); err != nil {
		return nil, err
	}
	body, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("re-encode manifest: %w", err)
	}
	if err := protojson.Unmarshal(body, msg); err != nil {
		return nil, fmt.Errorf("decode %s: %w", kindName, err)
	}
	return &Object{Kind: k, Msg: msg}, nil
}

func supportedKinds() string {
	var names []string
	for _, n := range []string{"Namespace", "Node", "Pod"} {
		names = append(names, Kinds[n].APIVersion+" "+n)
	}
	return strings.Join(names, ", ")
}
