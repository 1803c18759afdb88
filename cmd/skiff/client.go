package main

import (
	"net/http"
	"os"
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

// clientConfig resolves how to reach the server: --server, else
// $SKIFF_SERVER, else the client config's, else the default; the token
// from $SKIFF_TOKEN, else the client config's; the CA from the client
// config (--config, else $SKIFF_CONFIG, else ~/.skiff/config).
func (g *globals) clientConfig() (clientConfig, error) {
	cfg, _, err := loadClientConfig(g.config)
	if err != nil {
		return cfg, err
	}
	switch {
	case g.server != "":
		cfg.Server = g.server
	case os.Getenv("SKIFF_SERVER") != "":
		cfg.Server = os.Getenv("SKIFF_SERVER")
	case cfg.Server == "":
		cfg.Server = defaultServer
	}
	if t := os.Getenv("SKIFF_TOKEN"); t != "" {
		cfg.Token = t
	}
	return cfg, nil
}

// clients returns the API clients the flags and the client config ask for.
func (g *globals) clients() (*clients, error) {
	cfg, err := g.clientConfig()
	if err != nil {
		return nil, err
	}
	return newClients(cfg)
}

func newClients(cfg clientConfig) (*clients, error) {
	tr, err := cfg.transport()
	if err != nil {
		return nil, err
	}
	base := cfg.baseURL()
	hc := &http.Client{Timeout: 30 * time.Second, Transport: tr}
	return &clients{
		hc:     hc,
		stream: &http.Client{Transport: tr},
		base:   base,
		pods:   skiffv1connect.NewPodServiceClient(hc, base),
	}, nil
}

// of returns the generic client of a kind.
func (c *clients) of(k *kinds.Kind) kinds.Client { return k.Client(c.hc, c.base) }

// watching returns the generic client of a kind for a watch, which may
// last as long as the user wants.
func (c *clients) watching(k *kinds.Kind) kinds.Client { return k.Client(c.stream, c.base) }
