package main

import (
	"net/http"
	"strings"
	"time"

	"skiff.dev/skiff/control/api/gen/skiff/v1/skiffv1connect"
)

// clients are the API clients the CLI uses.
type clients struct {
	pods       skiffv1connect.PodServiceClient
	nodes      skiffv1connect.NodeServiceClient
	namespaces skiffv1connect.NamespaceServiceClient
}

func newClients(server string) *clients {
	base := server
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	return &clients{
		pods:       skiffv1connect.NewPodServiceClient(hc, base),
		nodes:      skiffv1connect.NewNodeServiceClient(hc, base),
		namespaces: skiffv1connect.NewNamespaceServiceClient(hc, base),
	}
}
