package cri

import (
	"context"
	"runtime/debug"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const (
	runtimeName       = "skiff"
	kubeAPIVersion    = "0.1.0" // the CRI "version" field, as every runtime reports it
	runtimeAPIVersion = "v1"
)

// runtimeVersion is skiff's version: the main module's version from the
// build info, "dev" when built from a work tree.
func runtimeVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// Version returns the runtime name and versions.
func (s *service) Version(context.Context, *runtime.VersionRequest) (*runtime.VersionResponse, error) {
	return &runtime.VersionResponse{
		Version:           kubeAPIVersion,
		RuntimeName:       runtimeName,
		RuntimeVersion:    runtimeVersion(),
		RuntimeApiVersion: runtimeAPIVersion,
	}, nil
}
