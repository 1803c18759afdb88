package main

import (
	"net/http"
	"strings"
	"time"

	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
	"skiff.dev/skiff/control/api/kinds"
)

// clients reach the API server for the CLI.
type clients struct {
	hc     *http.Client // unary calls: bounded
	stream *http.Client // watches: no overall timeout
	base   string
	pods   skiffv1connect.PodServiceClient
}

func newClients(server string) *clients {
	base := server
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	return &clients{
		hc:     hc,
		stream: &http.Client{},
		base:   base,
		pods:   skiffv1connect.NewPodServiceClient(hc, base),
	}
}

// of returns the generic client of a kind.
func (c *clients) of(k *kinds.Kind) kinds.Client { return k.Client(c.hc, c.base) }

// watching returns the generic client of a kind for a watch, which may
// last as long as the user wants.
func (c *clients) watching(k *kinds.Kind) kinds.Client { return k.Client(c.stream, c.base) }
