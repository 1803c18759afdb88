// Command critest-mirror is a dev tool for `go tool task critest`: it
// serves a Wasm stand-in under every image name and tag that critest
// v1.37.0 pulls, from a registry on 127.0.0.1, and writes a registry config
// for `skiff dev --registry-config` that mirrors critest's registries to
// it. It runs until it gets SIGINT or SIGTERM.
//
//	critest-mirror -module standin.wasm -config registries.yaml [-addr-file FILE]
//
// The module is built from ./standin with GOOS=wasip1 GOARCH=wasm. Each
// image is a Wasm OCI artifact (config application/vnd.wasm.config.v0+json,
// one application/wasm layer). Names whose tests need distinct images get
// distinct modules: the stand-in with a custom section naming its group
// appended, which changes the module's digest (skiff's image ID) and not
// what it does.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// image is one name critest pulls. Images of one group share a module
// (one image ID); every group has a module of its own.
type image struct {
	ref   string // as critest writes it
	group string // defaults to ref
	from  string // where in cri-tools v1.37.0 (pkg/validate, pkg/framework)
}

const (
	staging = "gcr.io/k8s-staging-cri-tools/"
	e2e     = "registry.k8s.io/e2e-test-images/"
)

// images is every image critest v1.37.0 pulls on linux/amd64.
//
// Not served: gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2…
// (testLinuxImageWithDigest): a pull by a fixed digest names bytes a
// stand-in cannot have, so "public image with digest should be pulled and
// removed" fails here by design.
var images = []image{
	{ref: e2e + "busybox:1.29-2", from: "framework/util.go DefaultLinuxContainerImage"},
	{ref: e2e + "nginx:1.14-2", from: "validate/consts.go webServerLinuxImage, security_context_linux.go nginxContainerImage"},
	{ref: e2e + "httpd:2.4.39-4", from: "validate/multi_container_linux.go httpdImage"},
	{ref: e2e + "nonewprivs:1.3", from: "validate/security_context_linux.go noNewPrivsImage"},
	{ref: staging + "hostnet-nginx-amd64:latest", from: "validate/consts_linux.go hostNetWebServerImage"},
	{ref: staging + "test-image-latest:latest", from: "validate/consts.go testLinuxImageWithoutTag"},
	{ref: staging + "test-image-tag:test", from: "validate/consts.go testLinuxImageWithTag"},
	{ref: staging + "test-image-tag:all", from: "validate/consts.go testLinuxImageWithAllReferences"},
	{ref: staging + "test-image-user-uid:latest", from: "validate/consts.go testImageUserUID"},
	{ref: staging + "test-image-user-username:latest", from: "validate/consts.go testImageUserUsername"},
	{ref: staging + "test-image-user-uid-group:latest", from: "validate/consts.go testImageUserUIDGroup"},
	{ref: staging + "test-image-user-username-group:latest", from: "validate/consts.go testImageUserUsernameGroup"},
	{ref: staging + "test-image-predefined-group:latest", from: "validate/consts.go testImagePreDefinedGroup"},
	{ref: staging + "test-image-1:latest", from: "validate/consts.go testLinuxDifferentTagDifferentImageList"},
	{ref: staging + "test-image-2:latest", from: "validate/consts.go testLinuxDifferentTagDifferentImageList"},
	{ref: staging + "test-image-3:latest", from: "validate/consts.go testLinuxDifferentTagDifferentImageList"},
	{ref: staging + "test-image-tags:1", group: "test-image-tags", from: "validate/consts.go testLinuxDifferentTagSameImageList"},
	{ref: staging + "test-image-tags:2", group: "test-image-tags", from: "validate/consts.go testLinuxDifferentTagSameImageList"},
	{ref: staging + "test-image-tags:3", group: "test-image-tags", from: "validate/consts.go testLinuxDifferentTagSameImageList"},
	{ref: "registry.k8s.io/pause:3.9", group: "pause", from: "validate/consts.go testSameImageDifferentRegistries"},
	{ref: "k8s.gcr.io/pause:3.9", group: "pause", from: "validate/consts.go testSameImageDifferentRegistries"},
}

func main() {
	modulePath := flag.String("module", "", "the stand-in Wasm module (required)")
	configPath := flag.String("config", "", "write skiff's registry config here (required)")
	addrFile := flag.String("addr-file", "", "also write the registry's host:port here")
	flag.Parse()
	if *modulePath == "" || *configPath == "" {
		fmt.Fprintln(os.Stderr, "usage: critest-mirror -module FILE.wasm -config FILE [-addr-file FILE]")
		os.Exit(2)
	}
	if err := run(*modulePath, *configPath, *addrFile); err != nil {
		log.Fatalf("critest-mirror: %v", err)
	}
}

func run(modulePath, configPath, addrFile string) error {
	module, err := os.ReadFile(modulePath)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(module, []byte("\x00asm")) {
		return fmt.Errorf("%s is not a Wasm module", modulePath)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	host := ln.Addr().String()
	srv := &http.Server{
		Handler:           registry.New(registry.Logger(log.New(os.Stderr, "registry: ", 0))),
		ReadHeaderTimeout: 10 * time.Second,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	if err := push(host, module); err != nil {
		srv.Close()
		return err
	}
	if err := os.WriteFile(configPath, []byte(config(host)), 0o644); err != nil {
		srv.Close()
		return err
	}
	if addrFile != "" {
		if err := os.WriteFile(addrFile, []byte(host+"\n"), 0o644); err != nil {
			srv.Close()
			return err
		}
	}
	fmt.Printf("critest-mirror: %d images on %s, registry config in %s\n", len(images), host, configPath)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// push writes every image of the table to the registry at host, under its
// repository path (a mirror keeps the path, changes the host).
func push(host string, module []byte) error {
	built := map[string]v1.Image{}
	for _, im := range images {
		group := im.group
		if group == "" {
			group = im.ref
		}
		img, ok := built[group]
		if !ok {
			var err error
			if img, err = artifact(withCustomSection(module, "critest-standin", group)); err != nil {
				return err
			}
			built[group] = img
		}
		src, err := name.ParseReference(im.ref)
		if err != nil {
			return fmt.Errorf("image %q: %w", im.ref, err)
		}
		dst, err := name.ParseReference(host+"/"+src.Context().RepositoryStr()+":"+src.Identifier(), name.Insecure)
		if err != nil {
			return fmt.Errorf("image %q: %w", im.ref, err)
		}
		if err := remote.Write(dst, img); err != nil {
			return fmt.Errorf("push %s: %w", dst, err)
		}
	}
	return nil
}

// artifact is module in the Wasm OCI artifact layout, as
// runtime/image/imagetest.WasmArtifact builds it.
func artifact(module []byte) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, "application/vnd.wasm.config.v0+json")
	return mutate.Append(img, mutate.Addendum{Layer: static.NewLayer(module, "application/wasm")})
}

// withCustomSection appends a Wasm custom section (id 0) called name
// holding payload: the module runs the same, its digest differs.
func withCustomSection(module []byte, name, payload string) []byte {
	var body []byte
	body = uleb(body, uint64(len(name)))
	body = append(body, name...)
	body = append(body, payload...)
	out := append([]byte{}, module...)
	out = append(out, 0)
	out = uleb(out, uint64(len(body)))
	return append(out, body...)
}

func uleb(b []byte, v uint64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}

// config is skiff's registry config: every registry of the table mirrors
// to host (loopback: plain HTTP without saying so).
func config(host string) string {
	regs := map[string]bool{}
	for _, im := range images {
		if ref, err := name.ParseReference(im.ref); err == nil {
			regs[ref.Context().RegistryStr()] = true
		}
	}
	names := make([]string, 0, len(regs))
	for r := range regs {
		names = append(names, r)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("# written by critest-mirror\nregistries:\n")
	for _, r := range names {
		fmt.Fprintf(&b, "  %s:\n    mirrors: [%q]\n", r, host)
	}
	return b.String()
}
