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
	"sigs.k8s.io/yaml"

	"skiff.dev/skiff/control/api/kinds"
)

// Object is one decoded document of a manifest file.
type Object struct {
	Kind *kinds.Kind
	Msg  kinds.Object
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
	k, err := kinds.ForManifest(apiVersion, kindName)
	if err != nil {
		return nil, err
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
