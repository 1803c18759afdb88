// Package kinds is the one registry of skiff's API kinds: for each kind its
// group, version and name, its plural and short names, whether it is
// namespaced, the fields a field selector may name, how the CLI prints it,
// and the generated Connect client and handler that carry it.
//
// The manifest decoder, the apiserver's generic create/get/list/watch/
// update/delete machinery and every CLI verb read this registry, so adding
// a kind is its .proto (a service with the six shared verbs), one Register
// call in registry.go, and its validation in the apiserver.
//
// It owns no behaviour of its own: Backend is implemented by the apiserver,
// Client is used by the CLI and the control loops.
package kinds

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	skiffv1 "skiff.dev/skiff/control/api/gen/skiff/v1"
)

// DryRunHeader asks Create, Update, UpdateStatus and Delete to validate
// and admit without writing, as Kubernetes' ?dryRun=All. Its value is "All".
const DryRunHeader = "Skiff-Dry-Run"

// Object is an API object: every kind has metadata.
type Object interface {
	proto.Message
	GetMetadata() *skiffv1.ObjectMeta
}

// Kind describes one API kind.
type Kind struct {
	// Group is "" for the core group (Pod, Node, Namespace, Event).
	Group   string
	Version string
	// Kind is the manifest name: "Pod".
	Kind string
	// Plural is the lower-case plural ("pods"), also the store's key prefix.
	Plural string
	// Singular is the lower-case singular ("pod").
	Singular string
	// Short are kubectl's short names ("po").
	Short      []string
	Namespaced bool
	// Fields are the fields a field selector may name, with how to read
	// each from an object; metadata.name and metadata.namespace are added.
	Fields map[string]func(Object) string
	// Columns are what `skiff get` prints; Wide columns only with -o wide.
	Columns []Column
	// Order sorts a table (events by when they last happened); by name
	// when nil.
	Order func(a, b Object) int

	new     func() Object
	newList func() proto.Message
	client  func(hc connect.HTTPClient, base string, opts ...connect.ClientOption) Client
	generic func(b Backend) any
	mount   func(impl any, opts ...connect.HandlerOption) (string, http.Handler, error)
}

// Column is one column of the table `skiff get` prints.
type Column struct {
	Header string
	Wide   bool
	Value  func(o Object, now time.Time) string
}

// APIVersion is the manifest apiVersion: "v1", "apps/v1".
func (k *Kind) APIVersion() string {
	if k.Group == "" {
		return k.Version
	}
	return k.Group + "/" + k.Version
}

// New returns an empty object of the kind.
func (k *Kind) New() Object { return k.new() }

// NewList returns an empty list message of the kind ("PodList").
func (k *Kind) NewList() proto.Message { return k.newList() }

// Client returns a type-erased client of the kind's service at base.
func (k *Kind) Client(hc connect.HTTPClient, base string, opts ...connect.ClientOption) Client {
	return k.client(hc, base, opts...)
}

// Handler serves the kind's six shared verbs from b. It fails for a kind
// whose service has more calls (Pod's Bind, UpdateStatus and Logs): serve
// those with Mount and an implementation that embeds GenericHandler.
func (k *Kind) Handler(b Backend, opts ...connect.HandlerOption) (string, http.Handler, error) {
	return k.mount(k.generic(b), opts...)
}

// GenericHandler returns the generic implementation of the kind's six
// shared verbs over b, for embedding in a fuller service implementation.
func (k *Kind) GenericHandler(b Backend) any { return k.generic(b) }

// Mount serves impl, which must implement the kind's generated handler
// interface (skiffv1connect.PodServiceHandler for Pod).
func (k *Kind) Mount(impl any, opts ...connect.HandlerOption) (string, http.Handler, error) {
	return k.mount(impl, opts...)
}

// FieldNames lists the field selector fields the kind supports, sorted.
func (k *Kind) FieldNames() []string {
	out := make([]string, 0, len(k.Fields))
	for f := range k.Fields {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// ID is how an object of the kind is named in messages: "ns/name" or "name".
func (k *Kind) ID(ns, name string) string {
	if k.Namespaced {
		return ns + "/" + name
	}
	return name
}

var (
	all    []*Kind
	byName = map[string]*Kind{} // every lower-case name a user may type
	byKind = map[string]*Kind{} // "Pod"
	byType = map[string]*Kind{} // protobuf full name: "skiff.v1.Pod"
)

// All returns every registered kind, in registration order.
func All() []*Kind { return append([]*Kind(nil), all...) }

// Lookup finds a kind by what a user types: its kind, plural, singular or
// short name, in any case ("pods", "po", "Pod").
func Lookup(name string) (*Kind, error) {
	if k, ok := byName[strings.ToLower(name)]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("unknown kind %q: use one of %s", name, strings.Join(Names(), ", "))
}

// Names lists the plural names of every kind, sorted.
func Names() []string {
	out := make([]string, 0, len(all))
	for _, k := range all {
		out = append(out, k.Plural)
	}
	sort.Strings(out)
	return out
}

// ForManifest finds a kind by a manifest's apiVersion and kind.
func ForManifest(apiVersion, kind string) (*Kind, error) {
	k, ok := byKind[kind]
	if !ok {
		var names []string
		for _, k := range all {
			names = append(names, k.APIVersion()+" "+k.Kind)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("kind: unsupported value %q: skiff accepts %s", kind, strings.Join(names, ", "))
	}
	if apiVersion != k.APIVersion() {
		return nil, fmt.Errorf("apiVersion: unsupported value %q for kind %s: use %q", apiVersion, kind, k.APIVersion())
	}
	return k, nil
}

// Of returns the kind of an object.
func Of(m proto.Message) (*Kind, bool) {
	k, ok := byType[string(m.ProtoReflect().Descriptor().FullName())]
	return k, ok
}

func add(k *Kind) *Kind {
	if k.Fields == nil {
		k.Fields = map[string]func(Object) string{}
	}
	k.Fields["metadata.name"] = func(o Object) string { return o.GetMetadata().GetName() }
	if k.Namespaced {
		k.Fields["metadata.namespace"] = func(o Object) string { return o.GetMetadata().GetNamespace() }
	}
	names := append([]string{strings.ToLower(k.Kind), k.Plural, k.Singular}, k.Short...)
	for _, n := range names {
		if other, ok := byName[n]; ok && other != k {
			panic(fmt.Sprintf("kinds: name %q of %s is taken by %s", n, k.Kind, other.Kind))
		}
		byName[n] = k
	}
	byKind[k.Kind] = k
	byType[string(k.new().ProtoReflect().Descriptor().FullName())] = k
	all = append(all, k)
	return k
}
