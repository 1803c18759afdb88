// Command critest-mirror is a dev tool for `go tool task critest` and
// `go tool task critest-runc`: it serves a stand-in under every image name
// and tag that critest v1.37.0 pulls, from a registry on 127.0.0.1, and
// writes a registry config for `skiff dev --registry-config` that mirrors
// critest's registries to it. It runs until it gets SIGINT or SIGTERM.
//
//	critest-mirror -module standin.wasm -config registries.yaml [-addr-file FILE]
//	critest-mirror -oci DIR [-ipcs FILE] -config registries.yaml [-addr-file FILE]
//
// With -module, each image is a Wasm OCI artifact (config
// application/vnd.wasm.config.v0+json, one application/wasm layer) of the
// module built from ./standin with GOOS=wasip1 GOARCH=wasm. Names whose
// tests need distinct images get distinct modules: the stand-in with a
// custom section naming its group appended, which changes the module's
// digest (skiff's image ID) and not what it does.
//
// With -oci, each image is a linux/amd64 OCI image that behaves as the
// real one does in critest's tests: a busybox root file system (DIR/busybox,
// Debian's dynamically linked busybox, with its loader and libraries from
// this machine, pgrep and the host's ipcs), plus what the image adds: a
// marker file, a User, accounts, a web server (busybox httpd in a script
// named nginx or httpd-foreground), DIR/nnp (setuid root) or DIR/pause
// alone. DIR/nnp and DIR/pause are ./nnp and ./pause built static. Images
// of one group are one image; every group has its own image ID.
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
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func main() {
	modulePath := flag.String("module", "", "serve Wasm stand-ins of this module")
	ociPath := flag.String("oci", "", "serve OCI stand-ins made of DIR/busybox, DIR/nnp and DIR/pause")
	ipcs := flag.String("ipcs", "/usr/bin/ipcs", "with -oci: the ipcs put in the images")
	configPath := flag.String("config", "", "write skiff's registry config here (required)")
	addrFile := flag.String("addr-file", "", "also write the registry's host:port here")
	flag.Parse()
	if (*modulePath == "") == (*ociPath == "") || *configPath == "" {
		fmt.Fprintln(os.Stderr, "usage: critest-mirror (-module FILE.wasm | -oci DIR [-ipcs FILE]) -config FILE [-addr-file FILE]")
		os.Exit(2)
	}
	var (
		build builder
		err   error
	)
	if *modulePath != "" {
		build, err = wasmBuilder(*modulePath)
	} else {
		build, err = ociImages(ociDir(*ociPath, *ipcs))
	}
	if err != nil {
		log.Fatalf("critest-mirror: %v", err)
	}
	if err := run(build, *configPath, *addrFile); err != nil {
		log.Fatalf("critest-mirror: %v", err)
	}
}

// builder makes the image of one name of the table.
type builder func(im image) (v1.Image, error)

// wasmBuilder serves the module at modulePath.
func wasmBuilder(modulePath string) (builder, error) {
	module, err := os.ReadFile(modulePath)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(module, []byte("\x00asm")) {
		return nil, fmt.Errorf("%s is not a Wasm module", modulePath)
	}
	return func(im image) (v1.Image, error) { return wasmImage(module, groupOf(im)) }, nil
}

// ociImages serves OCI stand-ins made of in.
func ociImages(in ociInputs) (builder, error) {
	b, err := newOCIBuilder(in)
	if err != nil {
		return nil, err
	}
	return func(im image) (v1.Image, error) { return b.image(im.oci) }, nil
}

func groupOf(im image) string {
	if im.group != "" {
		return im.group
	}
	return im.ref
}

func run(build builder, configPath, addrFile string) error {
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

	if err := push(host, build); err != nil {
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

// pushTimeout bounds the writes of every image to the registry.
const pushTimeout = 2 * time.Minute

// push writes every image of the table to the registry at host, under its
// repository path (a mirror keeps the path, changes the host). Images of
// one group are built once.
func push(host string, build builder) error {
	ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
	defer cancel()
	built := map[string]v1.Image{}
	for _, im := range images {
		img, ok := built[groupOf(im)]
		if !ok {
			var err error
			if img, err = build(im); err != nil {
				return fmt.Errorf("image %q: %w", im.ref, err)
			}
			built[groupOf(im)] = img
		}
		dst, err := mirrored(host, im.ref)
		if err != nil {
			return fmt.Errorf("image %q: %w", im.ref, err)
		}
		if err := remote.Write(dst, img, remote.WithContext(ctx)); err != nil {
			return fmt.Errorf("push %s: %w", dst, err)
		}
	}
	return nil
}

// mirrored is ref on the mirror at host.
func mirrored(host, ref string) (name.Reference, error) {
	src, err := name.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	return name.ParseReference(host+"/"+src.Context().RepositoryStr()+":"+src.Identifier(), name.Insecure)
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
		// Mirrors only: an image the mirror lacks (the fixed digest) must
		// fail here, not be fetched from the Internet.
		fmt.Fprintf(&b, "  %s:\n    mirrors: [%q]\n    mirrorsOnly: true\n", r, host)
	}
	return b.String()
}
